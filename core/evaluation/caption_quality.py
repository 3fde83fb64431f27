"""Report quality of retrieved captions: BLEU-4, METEOR, ROUGE-L and CIDEr (pycocoevalcap, the
COCO caption evaluation code) of each query's top-K retrieved captions against the query's own
caption, as report-retrieval work judges a retrieved report by how well it reads as the
query's report.

- image -> text: the retrieved captions vs the query image's caption;
- text -> image: the retrieved images' captions vs the query caption.

NLG@K = the metric's sentence-level score averaged over the queries and ranks 1..K (the
average quality of the first K results). Reference rows: the oracle (the correct caption
itself, the ceiling) and a random ranking (the floor). METEOR runs Java; without it the
METEOR column is missing and says why.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np

METRICS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
_PUNCT = re.compile(r"[^a-z0-9 ]+")


def normalise(text: str) -> str:
    """Lower case, punctuation as spaces, single spaces (the scorers split on spaces)."""
    return " ".join(_PUNCT.sub(" ", str(text).lower()).split()) or "empty"


def meteor_unavailable() -> str | None:
    """Why METEOR cannot run here, or None."""
    if shutil.which("java") is None:
        return "METEOR needs Java (apt install default-jre-headless); not found on PATH"
    return None


def _meteor(gts: dict, res: dict) -> np.ndarray:
    from pycocoevalcap.meteor.meteor import Meteor

    return np.asarray(Meteor().compute_score(gts, res)[1], np.float64)


def sentence_scores(references: list[str], candidates: list[str]) -> dict[str, np.ndarray]:
    """Per-pair scores of every metric (the candidate i against reference i). METEOR's Java
    process scores in a thread while Python scores the others: its per-pair round trips
    wait on the pipe, not on the interpreter, so the two overlap."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: [normalise(r)] for i, r in enumerate(references)}
    res = {i: [normalise(c)] for i, c in enumerate(candidates)}
    out = {}
    with ThreadPoolExecutor(1) as pool:
        meteor = pool.submit(_meteor, gts, res) if meteor_unavailable() is None else None
        with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its length ratios
            out["BLEU-4"] = np.asarray(Bleu(4).compute_score(gts, res)[1][3], np.float64)
            out["ROUGE-L"] = np.asarray(Rouge().compute_score(gts, res)[1], np.float64)
            out["CIDEr"] = np.asarray(Cider().compute_score(gts, res)[1], np.float64)
        if meteor is not None:
            out["METEOR"] = meteor.result()
    return out


def nlg_curves(captions: list[str], lists: dict, max_k: int = 10) -> dict:
    """{name: {metric: [NLG@1 .. NLG@K]}} for several top-K lists (rows into ``captions``;
    query q's reference is ``captions[q]``). Every distinct (query, item) pair is scored once,
    in one corpus, so all lists share CIDEr's document frequencies (and METEOR's one Java
    process)."""
    n = len(captions)
    lists = {name: np.asarray(rows)[:, :max_k] for name, rows in lists.items()}
    keys = np.concatenate([(np.arange(len(r))[:, None] * n + r).ravel() for r in lists.values()])
    unique, inverse = np.unique(keys, return_inverse=True)
    scores = sentence_scores([captions[q] for q in unique // n], [captions[j] for j in unique % n])
    out, offset = {}, 0
    for name, rows in lists.items():
        size = rows.size
        where = inverse[offset:offset + size].reshape(rows.shape)
        offset += size
        out[name] = {}
        for metric, values in scores.items():
            per_rank = values[where].mean(0)
            out[name][metric] = (np.cumsum(per_rank) / np.arange(1, rows.shape[1] + 1)).tolist()
    return out


def nlg_at_k(captions: list[str], topk: np.ndarray, max_k: int = 10) -> dict[str, list[float]]:
    """{metric: [NLG@1 .. NLG@max_k]} of one set of top-K lists (see ``nlg_curves``)."""
    return nlg_curves(captions, {"list": topk}, max_k)["list"]


def caption_quality(captions: list[str], topk: dict, max_k: int = 10, seed: int = 0) -> dict:
    """NLG@K of every method and direction (``topk[method][direction]``), plus the oracle and
    a random ranking, scored in one corpus."""
    n = len(captions)
    k = min(max_k, n)
    rng = np.random.default_rng(seed)
    lists = {(m, d): rows for m, by_d in topk.items() for d, rows in by_d.items()}
    lists[("random", "t2i")] = np.stack([rng.permutation(n)[:k] for _ in range(n)])
    lists[("oracle", "t2i")] = np.repeat(np.arange(n)[:, None], k, 1)
    found = nlg_curves(captions, lists, k)
    curves: dict = {}
    for (m, d), curve in found.items():
        curves.setdefault(m, {})[d] = curve
    return {"ks": list(range(1, k + 1)),
            "metrics": [m for m in METRICS if m in curves["oracle"]["t2i"]],
            "missing": {"METEOR": meteor_unavailable()} if meteor_unavailable() else {},
            "curves": curves}
