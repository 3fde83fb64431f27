"""The concept sections' tables and notes: concept detection (each model's image-only head
and the chance detector) and concept-aware retrieval of the three methods."""

from __future__ import annotations

LABELS = {"two_tower": "two-tower head", "fusion": "fusion head", "chance": "chance (priors)",
          "rerank": "rerank", "random": "random ranking"}
RETRIEVAL_LABELS = {"two_tower": "two-tower", "fusion": "fusion (all pairs)", "rerank": "rerank",
                    "random": "random ranking"}
DETECTION_COLUMNS = [("per_image_f1", "per-image F1 (ImageCLEF)"),
                     ("macro_precision", "macro P"), ("macro_recall", "macro R"),
                     ("macro_f1", "macro F1"), ("macro_auroc", "macro AUROC"),
                     ("macro_ap", "macro AP"), ("threshold", "threshold"),
                     ("mean_predicted_per_image", "predicted / image")]

DETECTION_NOTE = ("Concept detection: each model's image-only head predicts the image's UMLS "
                  "concept ids (an image+caption head would read them off the caption, from "
                  "which ROCOv2 extracts them). Per-image F1 is ImageCLEFmedical's score; macro "
                  "P/R/F1 cover the concepts present in this split, AUROC/AP those with both "
                  "classes present. Thresholds are chosen on the validation split. The chance "
                  "row scores every image with the training priors (always the frequent "
                  "concepts).")
RETRIEVAL_NOTE = ("Concept-aware retrieval, from the stored top-K lists: graded relevance = "
                  "Jaccard overlap of the query's and the item's concept sets (nDCG@5, ideal "
                  "ranking over the whole gallery); binary relevance = Jaccard >= 0.5 (P@5, mAP@K, "
                  "MRR@K). Exact-match Recall@K above stays the headline. 95 % bootstrap "
                  "intervals over the queries.")


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ci(e: dict) -> str:
    return f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"


def blocks(concepts: dict | None) -> list[tuple[str, tuple | None, str]]:
    if not concepts:
        return []
    if not concepts.get("available"):
        reason = concepts.get("reason", "n/a")
        return [("Concept detection", None, reason), ("Concept-aware retrieval", None, reason)]
    out = []
    det = concepts.get("detection")
    if det:
        header = ["detector", *[label for _, label in DETECTION_COLUMNS]]
        rows = [[LABELS.get(m, m), *[_f(r.get(key)) if key != "threshold" else f"{r[key]:g}"
                                    for key, _ in DETECTION_COLUMNS]]
                for m, r in det["methods"].items()]
        note = (f"{DETECTION_NOTE} Vocabulary: {det['vocabulary_size']} concepts from the "
                f"training split; {det['test_ids_outside_vocabulary']} concept ids of the "
                f"{det['test_images']} test images are outside it (counted as missed).")
        out.append(("Concept detection", (header, rows), note))
    else:
        out.append(("Concept detection", None, concepts.get("detection_reason", "n/a")))
    for protocol, by_method in concepts.get("retrieval", {}).items():
        metrics = None
        rows = []
        for m, by_direction in by_method.items():
            for d, values in by_direction.items():
                metrics = metrics or [k for k in values if k != "queries"]
                rows.append([RETRIEVAL_LABELS.get(m, m), d, *[_ci(values[k]) for k in metrics],
                             str(values["queries"])])
        if rows:
            header = ["method", "direction", *metrics, "queries"]
            title = f"Concept-aware retrieval (gallery: the {protocol} split)"
            out.append((title, (header, rows), RETRIEVAL_NOTE))
    return out
