"""The README's performance table, built from bench/results/*.json (no number typed)."""

from __future__ import annotations

import json
from pathlib import Path


def _load(results_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))}


def _row(r: dict) -> tuple[str, str, str, str] | None:
    """(benchmark, measured, target, verdict) for one result file."""
    b = r["bench"]
    if b == "synthetic_generation":
        v = r["pairs_per_s_per_core"]
        return ("synthetic data generation (224 px, 1 core)", f"{v:.0f} pairs/s",
                ">= 300 pairs/s", "met" if v >= 300 else "missed")
    if b == "pairwise_scoring":
        last = r["sizes"][-1]
        return (f"fusion scoring, split vs naive (N={last['n']})",
                f"{last['speedup']:.1f}x ({last['split_pairs_per_s']:.0f} vs "
                f"{last['naive_pairs_per_s']:.0f} pairs/s), max |diff| {last['max_abs_diff']:.1e}, "
                f"rankings identical: {last['rankings_identical']}",
                ">= 30x, identical rankings",
                "met" if last["speedup"] >= 30 and last["rankings_identical"] else "missed")
    if b == "scaling":
        e = r["exponents"]
        return ("scoring job scaling, N=" + "/".join(str(n) for n in r["sizes"]),
                f"time exponent: encode {e['encode_time']:.2f}, head {e['score_time']:.2f}; "
                f"peak RSS exponent {e['peak_rss']:.2f}",
                "encode ~1, head ~2, memory <= 1.1",
                "met" if e["peak_rss"] <= 1.1 else "missed")
    if b == "rerank":
        best = r["best"]
        return (f"rerank vs full fusion (N={r['n']})",
                (f"k={best['k']}: {best['speedup']:.1f}x faster, keeps "
                 f"{100 * best['recall_share']:.0f}% of fusion's R@10") if best else "no k qualified",
                ">= 10x faster keeping >= 95% of R@10",
                "met" if best and best["speedup"] >= 10 and best["recall_share"] >= 0.95 else "missed")
    if b == "ray_overhead":
        return ("Ray overhead (two-tower step, 1 worker)",
                f"Ray {r['slowdown']:.2f}x slower than plain PyTorch; input pipeline "
                f"{r['input_vs_consumption']:.1f}x the trainer's consumption",
                "<= 1.2x slower; >= 1.5x", "met" if r["slowdown"] <= 1.2 and
                r["input_vs_consumption"] >= 1.5 else "missed")
    if b == "roofline":
        return ("fusion head roofline", f"{r['head_gflops']:.0f} GFLOP/s = "
                f"{100 * r['fraction_of_matmul']:.0f}% of measured matmul {r['matmul_gflops']:.0f} GFLOP/s",
                ">= 30%", "met" if r["fraction_of_matmul"] >= 0.3 else "missed")
    return None


def performance_markdown(results_dir: Path) -> str:
    results = _load(results_dir)
    rows = [r for r in (_row(v) for v in results.values()) if r]
    machine = next(iter(results.values()))["machine"] if results else {}
    lines = [f"Measured by `make bench` on {machine.get('cores')} cores ({machine.get('cpu')}, "
             f"torch {machine.get('torch')}); regenerated into this table by "
             "`python tools/update_readme.py`.", "",
             "| benchmark | measured | target | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    for r in results.values():
        if r.get("projection"):
            lines += ["", r["projection"]]
    return "\n".join(lines)
