"""Fine-grained evaluation on the synthetic data: for every query whose one-attribute sibling
is in the gallery, does a method rank the true item above that sibling?

Siblings come from the generator's stated attributes (``family_id`` and the attribute
columns of the synthetic Parquet shards), never from parsing captions: two rows of one family
that differ in exactly one attribute (laterality, position, modality, finding, size, count)
are siblings. Each sibling pair is asked in both directions:

    text -> image   caption q: is image q ranked above image s?
    image -> text   image q: is caption q ranked above caption s?

Accuracy per attribute and overall, with 95 % bootstrap intervals over the comparisons
(``core.evaluation.significance``). Chance is 0.5.
"""

from __future__ import annotations

import numpy as np

from core.retrieval import fused_scores
from core.evaluation.significance import bootstrap_ci, paired_difference
from core.synthetic.attributes import SIBLING_ATTRIBUTES

FAMILY = "family_id"
COLUMNS = (FAMILY, *sorted({c for cols in SIBLING_ATTRIBUTES.values() for c in cols}),
           "body_region")


def sibling_pairs(attributes: dict[str, list], gallery_ids: list[str]) -> dict | None:
    """The (query, sibling) gallery rows that differ in exactly one attribute, with that
    attribute's name; ``attributes`` maps column -> values aligned with ``ids`` under key
    ``image_id``. None when the data states no families (not synthetic)."""
    if FAMILY not in attributes or not all(c in attributes for c in COLUMNS):
        return None
    row_of = {image_id: i for i, image_id in enumerate(gallery_ids)}
    facts = {}
    for j, image_id in enumerate(attributes["image_id"]):
        if image_id in row_of:
            facts[row_of[image_id]] = {c: attributes[c][j] for c in COLUMNS}
    by_family: dict = {}
    for row, f in facts.items():
        by_family.setdefault(f[FAMILY], []).append(row)
    query, sibling, attribute = [], [], []
    for members in by_family.values():
        for q in members:
            for s in members:
                if q == s:
                    continue
                differs = [name for name, cols in SIBLING_ATTRIBUTES.items()
                           if any(facts[q][c] != facts[s][c] for c in cols)]
                other = facts[q]["body_region"] != facts[s]["body_region"]
                if len(differs) == 1 and not other:
                    query.append(q)
                    sibling.append(s)
                    attribute.append(differs[0])
    return {"query": np.asarray(query, np.int64), "sibling": np.asarray(sibling, np.int64),
            "attribute": np.asarray(attribute, dtype=object)}


def ranked_above(score_true, score_other, index_true, index_other) -> np.ndarray:
    """Whether the true item is ordered before the other one: by score, ties to the lower
    gallery index (``core.metrics``' rule)."""
    score_true, score_other = np.asarray(score_true), np.asarray(score_other)
    return (score_true > score_other) | ((score_true == score_other)
                                         & (np.asarray(index_true) < np.asarray(index_other)))


def wins_from_matrix(scores: np.ndarray, pairs: dict) -> dict[str, np.ndarray]:
    """Per-direction wins from a full (captions x images) score matrix (references, tests)."""
    q, s = pairs["query"], pairs["sibling"]
    return {"t2i": ranked_above(scores[q, q], scores[q, s], q, s),
            "i2t": ranked_above(scores[q, q], scores[s, q], q, s)}


def sibling_clusters(pairs: dict) -> np.ndarray:
    """The unordered sibling pair of each comparison: both orderings of one pair (and both
    directions) are one unit of the bootstrap, not four independent ones."""
    q, s = np.asarray(pairs["query"]), np.asarray(pairs["sibling"])
    return np.minimum(q, s) * (max(int(q.max(initial=0)), int(s.max(initial=0))) + 1) + np.maximum(q, s)


def accuracy(wins: dict[str, np.ndarray], pairs: dict) -> dict:
    """Sibling accuracy overall, per direction and per attribute, with 95 % cluster-bootstrap
    intervals (sibling pairs resampled)."""
    both = np.concatenate([wins["t2i"], wins["i2t"]]).astype(np.float64)
    attrs = np.concatenate([pairs["attribute"], pairs["attribute"]])
    one = sibling_clusters(pairs)
    clusters = np.concatenate([one, one])
    out = {"overall": bootstrap_ci(both, clusters).as_dict(), "pairs": int(len(pairs["query"]))}
    for d in ("t2i", "i2t"):
        out[d] = bootstrap_ci(np.asarray(wins[d], np.float64), one).as_dict()
    out["by_attribute"] = {name: bootstrap_ci(both[attrs == name], clusters[attrs == name]).as_dict()
                           for name in SIBLING_ATTRIBUTES if (attrs == name).any()}
    return out


def compare_methods(wins: dict[str, dict[str, np.ndarray]], pairs: dict) -> dict:
    """Accuracy of every method, and each pair of methods' paired difference (overall)."""
    methods = list(wins)
    out = {"methods": {m: accuracy(wins[m], pairs) for m in methods}, "differences": [],
           "chance": 0.5, "pairs": int(len(pairs["query"]))}
    flat = {m: np.concatenate([wins[m]["t2i"], wins[m]["i2t"]]).astype(np.float64)
            for m in methods}
    one = sibling_clusters(pairs)
    clusters = np.concatenate([one, one])
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            d = paired_difference(flat[a], flat[b], clusters)
            out["differences"].append({"a": a, "b": b, **d.as_dict(),
                                       "significant": d.significant})
    return out


def score_wins(score, pairs: dict) -> dict[str, np.ndarray]:
    """Per-direction wins from ``score(text_index, image_index) -> scores``."""
    q, s = pairs["query"], pairs["sibling"]
    true = score(q, q)
    return {"t2i": ranked_above(true, score(q, s), q, s),
            "i2t": ranked_above(true, score(s, q), q, s)}


def rerank_wins(rescored: dict, alpha: float, pairs: dict, first_score) -> dict[str, np.ndarray]:
    """Wins under retrieve-and-rerank: among a query's candidates the fused score decides; a
    candidate beats a non-candidate; two non-candidates keep the first stage's order
    (``first_score(text_index, image_index) -> scores``, arrays in, array out)."""
    q, s = pairs["query"], pairs["sibling"]
    first_true = np.asarray(first_score(q, q))
    first_other = {"t2i": np.asarray(first_score(q, s)), "i2t": np.asarray(first_score(s, q))}
    out = {}
    for d in ("t2i", "i2t"):
        r = rescored[d]
        fused = fused_scores(r["scores"], r["first"], alpha)
        wins = ranked_above(first_true, first_other[d], q, s)  # neither is a candidate
        for n, (query, sib) in enumerate(zip(q, s)):
            cand = list(r["candidates"][query])
            where = {j: cand.index(j) for j in (query, sib) if j in cand}
            if query in where and sib in where:
                wins[n] = ranked_above(fused[query, where[query]], fused[query, where[sib]],
                                       query, sib)
            elif query in where or sib in where:
                wins[n] = query in where
        out[d] = wins
    return out
