"""The report's concept sections: a concept-detection table (each model's image-only concept
head and the chance detector) and concept-aware retrieval of the three methods. Returned as
(title, table or None, note) blocks that ``core.report`` renders into Markdown and HTML."""

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


EXPLANATION_NOTE = ("Each test image with a lesion box is explained for its own caption. "
                    "Pointing game: is the map's peak cell centre inside the lesion box; energy: "
                    "the share of the map inside the box. A random map's energy is about the "
                    "box's area (mean {area:.3f} of the image here). Maps live on the image "
                    "encoder's patch grid; 95 % bootstrap intervals over the {n} images. The "
                    "captions below the figure shade each token by its Integrated-Gradients "
                    "attribution to the fusion match logit (red raises it, blue lowers it).")


AGREEMENT_NOTE = (
    "No lesion boxes in this data, so the maps are scored without them, on {n} test pairs "
    "(each true caption with its image): agreement between two methods' maps of the same "
    "pair (Pearson r of the maps, IoU of their top-5 % and top-20 % most salient pixels; a "
    "random map gives the floor), and faithfulness (the score as the most salient pixels "
    "are deleted from the image or inserted into the mean image, 10 % at a time; area under "
    "the curve, the pair's score scaled to 1 for the full image and 0 for the mean image: "
    "deletion low and insertion high is faithful; a random map is the baseline). 95 % "
    "bootstrap intervals over pairs.")


def agreement_table(ex: dict) -> tuple[list[str], list[list[str]]]:
    header = ["maps", "Pearson r", "IoU top-5 %", "IoU top-20 %", "deletion AUC",
              "insertion AUC"]
    rows = [[name, "", "", "", _ci(s["deletion_auc"]), _ci(s["insertion_auc"])]
            for name, s in ex["faithfulness"].items()]
    rows += [[pair, _ci(s["pearson"]), _ci(s["iou@5%"]), _ci(s["iou@20%"]), "", ""]
             for pair, s in ex["agreement"].items()]
    return header, rows


def explanation_block(ex: dict | None) -> tuple[str, tuple | None, str, list[str]]:
    """(title, localisation table or None, note, token-shaded captions as HTML)."""
    title = "Explanations and localisation"
    if not ex:
        return title, None, "n/a", []
    if not ex.get("available"):
        return title, None, ex.get("reason", "n/a"), []
    if ex.get("mode") == "agreement":
        return ("Explanations: agreement and faithfulness", agreement_table(ex),
                AGREEMENT_NOTE.format(n=ex["cases"]), [c["html"] for c in ex.get("captions", [])])
    header = ["map", "pointing game", "energy in box"]
    rows = [[label, _ci(s["pointing"]), _ci(s["energy"])] for label, s in ex["localisation"].items()]
    note = EXPLANATION_NOTE.format(area=ex["mean_box_area"], n=ex["cases"])
    return title, (header, rows), note, [c["html"] for c in ex.get("captions", [])]
