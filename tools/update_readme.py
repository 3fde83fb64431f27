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
    gpu = f", {m['gpu']}" if m.get("gpu") else ", no GPU"
    return (f"{m['machine']}, {m['cpus']} CPUs, {m['memory_gib']} GiB{gpu}; torch {m['torch']}, "
            f"Ray {m['ray']}")


def demo_block(demo_dir: Path) -> str | None:
    from core import concept_report
    from core.report import cost_rows, fine_grained_rows, markdown_table, metrics_rows

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
    for title, table, _ in concept_report.blocks(metrics.get("concepts")):
        if table:
            lines += ["", f"{title}:", "", markdown_table(*table)]
    title, table, note, _ = concept_report.explanation_block(metrics.get("explanations"))
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
    from core.mcr_report import ablation_rows
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


def performance_block(results_dir: Path) -> str | None:
    from bench.summary import performance_markdown

    return performance_markdown(results_dir) if any(results_dir.glob("*.json")) else None


def main() -> None:
    readme = REPO / "README.md"
    text = readme.read_text()
    for name, body in (("demo-results", demo_block(REPO / "runs" / "demo")),
                       ("ablation-results", ablation_block(REPO / "runs" / "ablation" / "ablation.json")),
                       ("performance", performance_block(REPO / "bench" / "results"))):
        if body is None:
            print(f"{name}: no results found, block left as it is")
        elif f"<!-- BEGIN {name} -->" in text:
            text = replace_block(text, name, body)
            print(f"{name}: updated")
    readme.write_text(text)


if __name__ == "__main__":
    main()
