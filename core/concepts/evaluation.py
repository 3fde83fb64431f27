"""The concept sections of an evaluation: detection by each model's image-only concept head,
and concept-aware retrieval of each method's stored top-K lists (see ``core.concepts.detection``
and ``core.concepts.retrieval``). Inputs are arrays; the evaluate job reads them."""

from __future__ import annotations

import numpy as np

from core.concepts.detection import choose_threshold, detection_metrics, prior_scores, probabilities
from core.concepts.retrieval import per_query
from core.concepts.vocabulary import ConceptVocabulary
from core.evaluation.significance import bootstrap_ci

NO_CONCEPTS = "n/a: no concept ids in this data"


def detection(vocab: ConceptVocabulary, test_cuis: list, test_logits: dict,
              val_cuis: list | None = None, val_logits: dict | None = None) -> dict:
    """Per model (``test_logits[kind]``: (N, C) logits of its concept head, in the order of
    ``test_cuis``), and for the chance detector (training priors), every detection metric at
    a threshold chosen on the validation split (0.5 when none was scored)."""
    targets, unknown = vocab.multi_hot(test_cuis)
    val_targets = vocab.multi_hot(val_cuis)[0] if val_cuis is not None else None
    out = {"vocabulary_size": len(vocab), "test_images": len(targets),
           "test_ids_outside_vocabulary": int(unknown.sum()), "methods": {}}
    scored = {kind: probabilities(v) for kind, v in test_logits.items() if v is not None}
    scored["chance"] = prior_scores(vocab.priors(), len(targets))
    val_scored = {kind: probabilities(v) for kind, v in (val_logits or {}).items() if v is not None}
    if val_targets is not None:
        val_scored["chance"] = prior_scores(vocab.priors(), len(val_targets))
    for kind, probs in scored.items():
        threshold, source = 0.5, "fixed at 0.5 (no validation split scored)"
        if val_targets is not None:
            val_probs = val_scored.get(kind)
            if val_probs is not None:
                threshold, f1 = choose_threshold(val_targets, val_probs)
                source = f"chosen on validation (per-image F1 {f1:.3f} there)"
        out["methods"][kind] = {**detection_metrics(targets, probs, threshold),
                                "threshold_source": source}
    return out


def retrieval(query_cuis: list, gallery_cuis: list, topk: dict) -> dict:
    """Concept-aware retrieval of each method and direction (``topk[method][direction]``:
    (Nq, K) gallery rows), with 95 % bootstrap intervals over the queries. The relevance uses
    every concept id of the two splits, not only the trained vocabulary."""
    vocab = ConceptVocabulary.build(list(query_cuis) + list(gallery_cuis))
    queries, gallery = vocab.multi_hot(query_cuis)[0], vocab.multi_hot(gallery_cuis)[0]
    out = {}
    for method, directions in topk.items():
        out[method] = {}
        for d, rows in directions.items():
            k = np.asarray(rows).shape[1]
            per = per_query(queries, gallery, rows)
            if not len(per["kept"]):
                continue
            names = {"ndcg": "nDCG@5", "precision": "P@5", "ap": f"mAP@{k}", "rr": f"MRR@{k}"}
            out[method][d] = {label: bootstrap_ci(per[key]).as_dict() for key, label in names.items()}
            out[method][d]["queries"] = len(per["kept"])
    return out


def has_concepts(cuis: list) -> bool:
    return any(c is not None and len(c) for c in cuis)
