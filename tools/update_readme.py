"""Regenerate the README's result blocks from result files, so no number there is typed.

    python tools/update_readme.py            # after `rocoray demo` and/or `make bench`

Blocks are delimited by <!-- BEGIN name --> / <!-- END name --> markers:
  demo-results   from runs/demo/summary.json and runs/demo/eval/metrics.json
  ablation-results  from runs/ablation/ablation.json (`rocoray ablation`)
  performance    from bench/results/*.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README has no <!-- BEGIN {name} --> block")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def ran_on(result: dict) -> str:
    """The machine a result file says it was measured on."""
    m = result.get("machine")
    if not m:
        return "a machine the result file does not name (written by an older rocoray)"
    parts = [m.get("machine") or m.get("cpu"), f"{m.get('cpus') or m.get('cores')} CPUs"]
    if m.get("memory_gib"):
        parts.append(f"{m['memory_gib']} GiB")
    parts.append(m["gpu"] if m.get("gpu") else "no GPU")
    versions = [f"torch {m['torch']}"] + ([f"Ray {m['ray']}"] if m.get("ray") else [])
    return ", ".join(str(p) for p in parts) + "; " + ", ".join(versions)


def demo_block(demo_dir: Path) -> str | None:
    from core.report import concepts, explanations, markdown_table
    from core.report.tables import cost_rows, fine_grained_rows, metrics_rows

    summary_path = demo_dir / "summary.json"
    if not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    metrics = json.loads(Path(summary["evaluation"]).read_text())
    if "comparison" not in metrics:
        print(f"{summary_path}: written by an older rocoray (no verdict): run `rocoray demo` again")
        return None
    tt = summary["training"]["two_tower"]
    fu = summary["training"]["fusion"]
    lines = [
        f"Measured by `rocoray demo` ({summary['minutes']:.1f} min end to end on "
        f"{ran_on(summary)}), written here by `python tools/update_readme.py`.",
        "",
        "Training, on the validation split after the last epoch:",
        "",
        "| model | metric | measured | chance |",
        "|---|---|---|---|",
        f"| two-tower | text-to-image Recall@10 ({tt['final']['val/gallery_size']} images) | "
        f"{tt['final']['val/t2i/R@10']:.3f} | {tt['chance_R@10']:.3f} |",
        f"| two-tower | image-to-text Recall@10 | {tt['final']['val/i2t/R@10']:.3f} | "
        f"{tt['chance_R@10']:.3f} |",
        f"| fusion | match accuracy (positives + one negative each) | "
        f"{fu['final']['val/match_acc']:.3f} | 0.500 |",
        f"| fusion | text-to-image Recall@10 ({fu['final']['val/gallery_size']} images) | "
        f"{fu['final']['val/t2i/R@10']:.3f} | {fu['chance_R@10']:.3f} |",
        "",
        f"Test split, {metrics['gallery_size']} pairs; 95 % bootstrap intervals over queries:",
        "",
        markdown_table(*metrics_rows(metrics)),
        "",
        f"Verdict (from the report): {metrics['comparison']['verdict']['summary']}",
        "",
        markdown_table(*cost_rows(metrics)),
    ]
    if metrics.get("fine_grained"):
        lines += ["", "Fine-grained (the true item ranked above its one-attribute sibling; "
                  "chance 0.5):", "", markdown_table(*fine_grained_rows(metrics["fine_grained"]))]
    for title, table, _ in concepts.blocks(metrics.get("concepts")):
        if table:
            lines += ["", f"{title}:", "", markdown_table(*table)]
    title, table, note, _ = explanations.explanation_block(metrics.get("explanations"))
    if table and metrics["explanations"].get("mode") == "agreement":
        lines += ["", f"{title} ({metrics['explanations']['cases']} test pairs, no lesion boxes; "
                  "agreement between maps, and deletion / insertion areas beside a random "
                  "map's):", "", markdown_table(*table)]
    elif table:
        lines += ["", f"{title} ({metrics['explanations']['cases']} test pairs with a lesion "
                  f"box; a random map's energy is about the mean box area, "
                  f"{metrics['explanations']['mean_box_area']:.3f}):", "", markdown_table(*table)]
    return "\n".join(lines)


def ablation_block(path: Path) -> str | None:
    from core.report.tables import ablation_rows
    from core.report import markdown_table

    if not path.exists():
        return None
    result = json.loads(path.read_text())
    epochs = {v["epochs"] for v in result["variants"]}
    return "\n".join([
        f"Measured by `rocoray ablation` (preset {result['config']}, {', '.join(map(str, epochs))} "
        f"epochs, {result['data']}, {result['split']} split, on {ran_on(result)}), written "
        "here by `python tools/update_readme.py`:", "",
        markdown_table(*ablation_rows(result)), "", result["note"]])


def _ci(e: dict) -> str:
    return f"{e['value']:.3f} [{e['low']:.2f}, {e['high']:.2f}]"


ROCO_LABELS = {"two_tower": "two-tower", "fusion": "fusion (all pairs)", "rerank": "rerank"}


def roco_block(results_dir: Path) -> str | None:
    """The real-data section: bench/results/roco_sample.json (the demo on the ROCO sample)
    and bench/results/roco_variants.json (what moves recall), when they exist."""
    from core.report import markdown_table

    lines = []
    sample = results_dir / "roco_sample.json"
    if sample.exists():
        r = json.loads(sample.read_text())
        ks = ("R@1", "R@5", "R@10")
        header = ["method"] + [f"{d} {k}" for d in ("t2i", "i2t") for k in ks]
        rows = [[ROCO_LABELS.get(m, m)] + [_ci(r["recall"][m][d][k]) for d in ("t2i", "i2t")
                                           for k in ks] for m in r["recall"]]
        rows.append(["chance (group-aware)"] + [f"{r['chance'][k]:.3f}" for _ in ("t2i", "i2t")
                                                for k in ks])
        stages = r.get("stages") or {}
        lines += [
            f"Measured by `python -m bench.roco_sample` (`rocoray demo --data {r['data']} "
            f"--config {r['config']}`: "
            + (f"{r['minutes']:.1f} min end to end" if r.get("minutes") else "time not recorded")
            + f" on {ran_on({'machine': r.get('ran_on')})}), "
            "written here by `python tools/update_readme.py` from bench/results/roco_sample.json.",
            "", f"Test split, {r['test_items']} real figures; 95 % bootstrap intervals over queries:",
            "", markdown_table(header, rows), "",
            f"Verdict (from the report): {r['verdict']['summary']}", ""]
        det = r.get("concept_detection") or {}
        if det:
            drow = [[name, _ci(v["per_image_f1"]) if isinstance(v.get("per_image_f1"), dict)
                     else f"{v.get('per_image_f1', float('nan')):.3f}"]
                    for name, v in det.items() if isinstance(v, dict) and "per_image_f1" in v]
            if drow:
                lines += ["Concept detection on the test figures (ImageCLEF per-image F1, "
                          "threshold chosen on validation):", "",
                          markdown_table(["detector", "per-image F1"], drow), ""]
        if stages:
            lines += ["Time and memory of each stage (peak resident memory summed over the "
                      "job's processes):", "",
                      markdown_table(["stage", "seconds", "peak RSS MB"],
                                     [[k, f"{v['seconds']:.0f}", str(v["peak_rss_mb"])]
                                      for k, v in stages.items()]), ""]
    variants = results_dir / "roco_variants.json"
    if variants.exists():
        v = json.loads(variants.read_text())
        header = ["variant", "kept", "best epoch", "t2i R@1", "t2i R@5", "t2i R@10", "i2t R@1",
                  "i2t R@5", "i2t R@10", "train s"]
        rows = [[x["variant"], "yes (the preset)" if x["kept"] else "",
                 f"{x['best_epoch']} of {x.get('epochs', v['epochs'])}"]
                + [_ci(x[f"{d}/R@{k}"]) for d in ("t2i", "i2t") for k in (1, 5, 10)]
                + [f"{x['train_seconds']:.0f}"] for x in v["variants"]]
        rows.append(["chance (group-aware)", "", ""] + [f"{v['chance'][f'R@{k}']:.3f}"
                                                      for _ in (0, 1) for k in (1, 5, 10)] + [""])
        lines += [f"What moves two-tower recall, measured side by side by `python -m "
                  f"bench.roco_variants` (each variant the `roco_cpu` preset with overrides, "
                  f"trained on the frozen layers encoded once, best validation epoch kept, "
                  f"test split of {v['test_items']}; encoding {v['encode_seconds']:.0f} s; on "
                  f"{ran_on(v)}):", "", markdown_table(header, rows)]
    return "\n".join(lines) if lines else None


def performance_block(results_dir: Path) -> str | None:
    from bench.summary import performance_markdown

    return performance_markdown(results_dir) if any(results_dir.glob("*.json")) else None


def main() -> None:
    readme = REPO / "README.md"
    text = readme.read_text()
    for name, body in (("demo-results", demo_block(REPO / "runs" / "demo")),
                       ("ablation-results", ablation_block(REPO / "runs" / "ablation" / "ablation.json")),
                       ("roco-results", roco_block(REPO / "bench" / "results")),
                       ("performance", performance_block(REPO / "bench" / "results"))):
        if body is None:
            print(f"{name}: no results found, block left as it is")
        elif f"<!-- BEGIN {name} -->" in text:
            text = replace_block(text, name, body)
            print(f"{name}: updated")
    readme.write_text(text)


if __name__ == "__main__":
    main()
