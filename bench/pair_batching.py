"""Rerank's pair scoring on CPUs, three ways side by side in one run, on the VALIDATION
split's candidates of a trained ROCO demo (the batch size ``core.scoring.pairs.pair_batch``
chose rests on it): each query's two-tower top-k candidates, both directions, re-scored by
the fusion model

    blocks     each query with its own candidates as a 1 x k block (``FusionModel.score``;
               the rerank job's path up to now)
    pairs-2048 the pairs path, 2048 pairs per call in listed order (validation's up to now)
    pairs      the rerank job's scorer as it runs now (``core.scoring.worker.score_candidates``
               through ``pair_scores``: ``pair_batch`` pairs per call, by caption length)

Reads the demo run's validation features (``<run>/eval/validation/rerank``); precision as
the run scored. Writes bench/results/pair_batching.json.

    python -m bench.pair_batching [--run runs/bench-roco_sample] [--k 32] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench._checkpoints import checkpoint_record, short
from bench._common import write_result

@torch.no_grad()
def by_blocks(model, queries, gallery, candidates: np.ndarray, query_side: str) -> np.ndarray:
    """Each query with its candidates as a 1 x k block: the rerank job's former path."""
    out = np.empty(candidates.shape, np.float32)
    for i, rows in enumerate(candidates):
        q, c = queries.index(slice(i, i + 1)), gallery.index(torch.as_tensor(rows))
        block = model.score(q, c) if query_side == "text" else model.score(c, q).T
        out[i] = block[0].float().cpu().numpy()
    return out


@torch.no_grad()
def by_2048(model, queries, gallery, candidates: np.ndarray, query_side: str) -> np.ndarray:
    """The pairs in listed order, 2048 per ``score_pairs`` call: validation's former path."""
    own, listed = np.repeat(np.arange(len(candidates)), candidates.shape[1]), candidates.ravel()
    text, image, ti, ii = ((queries, gallery, own, listed) if query_side == "text"
                           else (gallery, queries, listed, own))
    out = [model.score_pairs(text, image, torch.as_tensor(ti[a:a + 2048]),
                             torch.as_tensor(ii[a:a + 2048]), ranking=True).float().numpy()
           for a in range(0, len(ti), 2048)]
    return np.concatenate(out).reshape(candidates.shape)


def arms() -> dict:
    """Each arm's scorer: (model, queries, gallery, candidates, query side) -> (nq, k)."""
    from core.scoring.worker import score_candidates

    return {"blocks": by_blocks, "pairs-2048": by_2048, "pairs": score_candidates}


def run_arm(scorer, model, sides: dict) -> tuple[dict, float]:
    scores, t0 = {}, time.perf_counter()
    for d, (queries, gallery, cand, side) in sides.items():
        scores[d] = scorer(model, queries, gallery, cand, side)
    return scores, time.perf_counter() - t0


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/bench-roco_sample")
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None,
                   help="the results file (default bench/results/pair_batching.json)")
    args = p.parse_args(argv)
    from core.analyses.scored import load_features
    from core.checkpoint import load_checkpoint
    from core.precision import autocast
    from core.scoring import outputs
    from core.scoring.pairs import pair_batch

    val = Path(args.run) / "eval" / "validation" / "rerank"
    summary = outputs.read_summary(str(val))
    fusion = load_checkpoint(summary["checkpoints"]["fusion"]).model.eval()
    precision = summary["precision"] or "fp32"
    f_text, f_image = load_features(summary, "fusion")
    t_text, t_image = load_features(summary, "two_tower")
    cos = (t_text.embed @ t_image.embed.T).float()
    k = min(args.k, len(cos))
    sides = {"t2i": (f_text, f_image, cos.topk(k, 1).indices.numpy(), "text"),
             "i2t": (f_image, f_text, cos.T.topk(k, 1).indices.numpy(), "image")}
    pairs = sum(c.size for _, _, c, _ in sides.values())
    scorers = arms()
    seconds, scores = {a: [] for a in scorers}, {}
    with autocast(torch.device("cpu"), precision):
        for _ in range(args.repeats):  # arms interleaved: drift on this machine hits all
            for arm, scorer in scorers.items():
                scores[arm], s = run_arm(scorer, fusion, sides)
                seconds[arm].append(s)
    rate = {a: pairs / statistics.median(s) for a, s in seconds.items()}
    diff = {f"{a}_vs_pairs": float(max(np.abs(scores[a][d] - scores["pairs"][d]).max()
                                       for d in sides)) for a in scorers if a != "pairs"}
    result = {"bench": "pair_batching", "data": summary["data"], "split": summary["split"],
              "run": args.run, "checkpoint": checkpoint_record(summary["checkpoints"]["fusion"]),
              "k": k, "pairs": pairs, "precision": precision,
              "pair_batch": pair_batch("cpu"), "seconds": seconds, "pairs_per_s": rate,
              "speedup_vs_blocks": rate["pairs"] / rate["blocks"],
              "speedup_vs_2048": rate["pairs"] / rate["pairs-2048"], "max_abs_diff": diff}
    print(f"pairs {rate['pairs']:.0f} pairs/s: {result['speedup_vs_blocks']:.2f}x blocks, "
          f"{result['speedup_vs_2048']:.2f}x batch 2048; max |diff| {diff}")
    write_result(result, out=args.out)
    return result


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    rate = r["pairs_per_s"]
    measured = (f"{rate['pairs']:.0f} pairs/s ({r['pair_batch']} per call, by caption length): "
                f"{r['speedup_vs_blocks']:.2f}x 1 x k blocks ({rate['blocks']:.0f}), "
                f"{r['speedup_vs_2048']:.2f}x 2048 per call ({rate['pairs-2048']:.0f}); "
                f"{r['precision']}, {r['pairs']} {r['split']} candidate pairs, k={r['k']}"
                + (f"; {short(r['checkpoint'])}" if "checkpoint" in r else ""))
    return [("rerank pair scoring, CPU", measured, "faster than both former paths",
             "met" if min(r["speedup_vs_blocks"], r["speedup_vs_2048"]) > 1 else "missed")]


if __name__ == "__main__":
    main()
