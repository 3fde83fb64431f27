"""Regenerate the README's result blocks from the committed results files, so no number
there is typed, and every block says the commit and date it was measured at; a block whose
measured code (the script and every project module it imports; comments and docstrings
aside) changed since, or whose command's preset (``--config NAME``: core/presets/NAME.yaml,
comments aside) has other settings now, is marked STALE automatically.

    python tools/update_readme.py            # after `make bench` / `python -m bench.demo_run`
    python tools/update_readme.py --check    # CI: fails when the README differs

Blocks are delimited by <!-- BEGIN name --> / <!-- END name --> markers:
  demo-results      bench/results/demo.json (`python -m bench.demo_run --name demo`)
  roco-results      bench/results/roco_ccby.json, roco_sample.json, fusion_variants.json,
                    fusion_learning_curve.json, roco_variants.json
  ablation-results  bench/results/ablation.json
  performance       bench/results/*.json (each bench's rows)
  test-times        bench/results/test_suite.json (written by the test run itself)
  install-time      bench/results/install_time.json (python -m bench.install_time)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


PACKAGES = ("core", "ray_jobs", "bench")
PRESETS = "core/presets"


def _module_path(name: str) -> Path | None:
    base = REPO / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def measured_files(entry: str) -> list[str]:
    """The entry script and every project module it imports, transitively (the code a
    result measured), as repository-relative paths."""
    import ast

    todo, seen = [REPO / entry], set()
    while todo:
        path = todo.pop()
        if path in seen or not path.exists():
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name.split(".")[0] in PACKAGES:
                    found = _module_path(name)
                    if found is not None:
                        todo.append(found)
    return sorted(str(p.relative_to(REPO)) for p in seen)


def _git(*args: str) -> str:
    import subprocess

    out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def stamp(result: dict, entry: str, also: tuple = ()) -> str:
    """"measured at <commit> (<date>)", and STALE when the code the result measured (the
    entry script and what it imports, ``code_changed``) differs at HEAD from that commit, or
    the preset its command ran has other settings now (``presets_named``), or when the
    result carries no provenance, or was measured on uncommitted changes."""
    prov = result.get("provenance") or {}
    commit = prov.get("commit")
    if not commit:
        return "STALE: no provenance recorded (measured before results carried one)"
    short, date = commit[:7], (prov.get("time_utc") or "")[:10]
    text = f"measured at {short} ({date})"
    if not _git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"):
        return text + "; STALE: that commit is not in this history"
    files = measured_files(entry)
    if code_changed(commit, [*files, *also]):
        text += "; STALE: the measured code changed since"
    elif any(preset_settings(commit, name) != preset_settings(None, name)
             for name in presets_named(prov.get("command") or "")):
        text += "; STALE: the settings of the preset it ran changed since"
    elif prov.get("dirty"):
        text += "; measured with uncommitted changes"
    return text


PRESENTATION = "readme_rows"  # a bench's function that words its results file as README rows


def code_fingerprint(source: str) -> str:
    """Python source as its syntax tree without docstrings and without a module-level
    ``readme_rows``: equal for two sources that differ only in comments, docstrings, layout or
    how the README words a results file (which measure the same: ``readme_rows`` reads the
    results file again at every regeneration, so its new wording shows at once), different
    otherwise. What ``readme_rows`` calls is code like any other."""
    import ast

    tree = ast.parse(source)
    tree.body = [node for node in tree.body
                 if not (isinstance(node, ast.FunctionDef) and node.name == PRESENTATION)]
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def code_changed(commit: str, files: list[str]) -> list[str]:
    """Those of ``files`` whose code differs between ``commit`` and HEAD: Python compared by
    ``code_fingerprint`` (a comment or docstring edit is no new code; a script's
    ``__doc__`` shows only in its --help), any other file byte for byte."""
    changed = _git("diff", "--name-only", commit, "HEAD", "--", *files).split()

    def fingerprint(ref: str, path: str) -> str | None:
        source = _git("show", f"{ref}:{path}")
        return code_fingerprint(source) if source else None

    return [f for f in changed if not f.endswith(".py")
            or fingerprint(commit, f) != fingerprint("HEAD", f)]


def presets_named(command: str) -> list[str]:
    """The presets a result's command ran (``--config NAME``), each with the one it starts
    from (``base:``). A bench that loads a preset itself names none: its own code says which,
    and its settings there are part of what it measured only as the script states them."""
    import re

    import yaml

    names = re.findall(r"--config[= ](\S+)", command)
    for name in list(names):
        path = REPO / PRESETS / f"{name}.yaml"
        parent = (yaml.safe_load(path.read_text()) or {}).get("base") if path.exists() else None
        if parent:
            names.append(parent)
    return names


def preset_settings(ref: str | None, name: str):
    """A preset (core/presets/<name>.yaml) as parsed at git ``ref`` (None: the working tree):
    its settings without its comments, so a comment edit leaves a result current and a
    changed setting makes the results that ran it STALE."""
    import yaml

    if ref is None:
        path = REPO / PRESETS / f"{name}.yaml"
        return yaml.safe_load(path.read_text()) if path.exists() else None
    source = _git("show", f"{ref}:{PRESETS}/{name}.yaml")
    return yaml.safe_load(source) if source else None


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


def demo_tables(metrics: dict, training: dict) -> list[str]:
    """The tables of a demo's results file: training finals, test recall, verdict, cost,
    fine-grained, concepts, explanations (no number typed here)."""
    from core.report import concepts, explanations, markdown_table
    from core.report.tables import cost_rows, fine_grained_rows, metrics_rows

    tt, fu = training["two_tower"], training["fusion"]
    lines = [
        "Training, on the validation split after the last epoch:", "",
        "| model | metric | measured | chance |", "|---|---|---|---|",
        f"| two-tower | text-to-image Recall@10 ({tt['final']['val/gallery_size']} images) | "
        f"{tt['final']['val/t2i/R@10']:.3f} | {tt['chance_R@10']:.3f} |",
        f"| two-tower | image-to-text Recall@10 | {tt['final']['val/i2t/R@10']:.3f} | "
        f"{tt['chance_R@10']:.3f} |",
        f"| fusion | match accuracy (positives + one negative each) | "
        f"{fu['final']['val/match_acc']:.3f} | 0.500 |",
        f"| fusion | text-to-image Recall@10 ({fu['final']['val/gallery_size']} images) | "
        f"{fu['final']['val/t2i/R@10']:.3f} | {fu['chance_R@10']:.3f} |",
        "", f"Test split, {metrics['gallery_size']} pairs; 95 % bootstrap intervals over queries:",
        "", markdown_table(*metrics_rows(metrics)), "",
        f"Verdict (from the report): {metrics['comparison']['verdict']['summary']}", "",
        markdown_table(*cost_rows(metrics))]
    fg = metrics.get("fine_grained")
    if fg and fg.get("available", True):
        lines += ["", "Fine-grained (the true item ranked above its one-attribute sibling; "
                  "chance 0.5):", "", markdown_table(*fine_grained_rows(fg))]
    for title, table, _ in concepts.blocks(metrics.get("concepts")):
        if table:
            lines += ["", f"{title}:", "", markdown_table(*table)]
    ex = metrics.get("explanations") or {}
    title, table, note, _ = explanations.explanation_block(ex or None)
    if table and ex.get("mode") == "agreement":
        lines += ["", f"{title} ({ex['cases']} test pairs, no lesion boxes; agreement between "
                  "maps, and deletion / insertion areas beside a random map's):", "",
                  markdown_table(*table)]
    elif table:
        lines += ["", f"{title} ({ex['cases']} test pairs with a lesion box; a random map's "
                  f"energy is about the mean box area, {ex['mean_box_area']:.3f}):", "",
                  markdown_table(*table)]
    return lines


def checkpoints_line(r: dict) -> list[str]:
    """The checkpoints a demo evaluated (``bench._checkpoints``), as the bench rows that read
    them name theirs; nothing for a results file collected before it recorded them."""
    from bench._checkpoints import short

    if not r.get("checkpoints"):
        return []
    return ["Checkpoints evaluated: " + "; ".join(short(c) for c in r["checkpoints"].values())
            + ".", ""]


def stage_table(stages: dict) -> list[str]:
    from core.report import markdown_table

    return ["Time and memory of each stage (`evaluate: ...` are the parts of `score and "
            "evaluate`; peak resident memory summed over the job's processes, shared pages "
            "counted in each):", "",
            markdown_table(["stage", "seconds", "peak RSS MB"],
                           [[k, f"{v['seconds']:.0f}", str(v["peak_rss_mb"])]
                            for k, v in stages.items()])]


def demo_block(path: Path) -> str | None:
    """The demo block: bench/results/demo.json (`python -m bench.demo_run --name demo`)."""
    if not path.exists():
        return None
    r = json.loads(path.read_text())
    lines = [f"Measured by `rocoray demo` ({r['minutes']:.1f} min end to end on {ran_on(r)}; "
             f"{stamp(r, 'ray_jobs/demo.py')}), collected by `python -m bench.demo_run --name "
             f"demo` into {path.relative_to(REPO)} and written here by `python "
             "tools/update_readme.py`.", "", *checkpoints_line(r)]
    return "\n".join(lines + demo_tables(r["metrics"], r["training"]))


def _ci(e: dict) -> str:
    return f"{e['value']:.3f} [{e['low']:.2f}, {e['high']:.2f}]"


ROCO_LABELS = {"two_tower": "two-tower", "fusion": "fusion (all pairs)", "rerank": "rerank"}


def real_demo_lines(path: Path, command: str) -> list[str]:
    """A real-data demo's results file (`python -m bench.demo_run --name roco_...`)."""
    if not path.exists():
        return []
    r = json.loads(path.read_text())
    return [f"`{command}`: {r['minutes']:.1f} min end to end on {ran_on(r)} "
            f"({stamp(r, 'ray_jobs/demo.py')}; {path.relative_to(REPO)}, data "
            f"{r['data']}).", "", *checkpoints_line(r), *demo_tables(r["metrics"], r["training"]),
            "",
            *stage_table(r["stages"]), ""]


def two_tower_variants_lines(path: Path) -> list[str]:
    from core.report import markdown_table

    if not path.exists():
        return []
    v = json.loads(path.read_text())
    header = ["variant", "validation mean recall", "minus the best [95 % paired]", "kept",
              "best epoch", "t2i R@1", "t2i R@5", "t2i R@10", "i2t R@1", "i2t R@5", "i2t R@10",
              "train s"]
    rows = [[x["variant"], f"{x['val_mean_recall']:.4f}", _val_diff(x),
             "yes" if x.get("kept") else ("" if x.get("candidate", True) else "not a candidate"),
             f"{x['best_epoch']} of {x.get('epochs', v['epochs'])}"]
            + [_ci(x[f"{d}/R@{k}"]) for d in ("t2i", "i2t") for k in (1, 5, 10)]
            + [f"{x['train_seconds']:.0f}"] for x in v["variants"]]
    rows.append(["chance (group-aware)", "", "", "", ""]
                + [f"{v['chance'][f'R@{k}']:.3f}" for _ in (0, 1) for k in (1, 5, 10)] + [""])
    return [f"What moves two-tower recall, side by side by `python -m bench.roco_variants` "
            f"({stamp(v, 'bench/roco_variants.py')}): each variant the `roco_cpu` preset with "
            f"overrides, trained on the frozen layers encoded once, its best validation epoch "
            f"kept. The variant kept: {v.get('criterion', 'the best validation mean recall')}. "
            f"{VAL_DIFF_NOTE} Test split of {v['test_items']} on {ran_on(v)}:",
            "", markdown_table(header, rows), ""]


VAL_DIFF_NOTE = ("\"Minus the best\": its validation mean recall minus the best variant's, "
                 "with the paired 95 % bootstrap interval over the validation queries "
                 "(* below the best beyond the interval).")


def _val_diff(row: dict) -> str:
    """A variant's validation mean recall minus the best's, with its paired interval."""
    d = row.get("val_minus_best")
    if d is None:
        return ""
    if row.get("best"):
        return "best"
    return (f"{d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
            + ("" if d["within_noise"] else "*"))


def fusion_variants_lines(path: Path) -> list[str]:
    from core.report import markdown_table

    if not path.exists():
        return []
    v = json.loads(path.read_text())
    rules = ("itm", "fused", "rerank")
    header = (["variant", "epochs", "samples/s"] + [f"val mean recall: {r}" for r in rules]
              + ["minus the best [95 % paired]", "cost s", "kept"])
    rows = [[x["variant"], str(x["epochs"]), f"{x['samples_per_s']:.0f}"]
            + [f"{x['validation'][r]['mean_recall']:.4f}"
               + (f" ({', '.join(f'{k} {g:g}' for k, g in x['validation'][r]['setting'].items())})"
                  if x["validation"][r]["setting"] else "") for r in rules]
            + [_val_diff(x), _fusion_cost(x),
               ", ".join(["yes"] * bool(x.get("kept"))
                         + ["roco_cpu when measured"] * bool(x.get("preset")))]
            for x in v["variants"]]
    lines = [f"Fusion on real ROCO, side by side by `python -m bench.fusion_variants` "
             f"({stamp(v, 'bench/fusion_variants.py')}; on {ran_on(v)}). Each variant is the "
             "`roco_cpu` fusion model with overrides, trained on the two-tower's frozen towers; "
             "scored on validation three ways: itm = fusion over all pairs by its match logit; "
             "fused = match logit + a x its ITC cosine; rerank = the two-tower top-k re-ordered "
             "by match logit + a x two-tower cosine (a, k chosen on validation). Two-tower "
             f"validation mean recall: {v['two_tower_validation_mean_recall']:.4f}. "
             f"The variant kept: {v['criterion']}. {VAL_DIFF_NOTE}", "",
             markdown_table(header, rows), ""] + seed_check_lines(v)
    labels = {"two_tower": "two-tower", "itm": "fusion, match logit (all pairs)",
              "fused": "fusion, fused score (all pairs)", "rerank": "rerank"}
    for x in v["variants"]:
        if "test" not in x:
            continue
        trows = []
        for rule, r in x["test"].items():
            cells = [labels[rule]]
            for d in ("t2i", "i2t"):
                for k in (1, 5, 10):
                    cell = _ci(r[f"{d}/R@{k}"])
                    diff = r.get(f"{d}/R@{k}/minus_two_tower")
                    if diff:
                        cell += f" ({diff['value']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]" \
                                + ("*" if diff["significant"] else "") + ")"
                    cells.append(cell)
            trows.append(cells)
        lines += [f"Test split ({v['test_items']} figures), {x['variant']}"
                  + (" (kept" + (", and roco_cpu when measured)" if x.get("preset") else ")")
                     if x.get("kept") else " (roco_cpu when measured)")
                  + ": recall with 95 % intervals, and in brackets the paired difference from "
                  "the two-tower model (* beyond the interval):", "",
                  markdown_table(["method"] + [f"{d} R@{k}" for d in ("t2i", "i2t")
                                               for k in (1, 5, 10)], trows), ""]
    return lines


def learning_curve_lines(path: Path) -> list[str]:
    """Both models on nested fractions of the training split (fusion_learning_curve.json)."""
    from core.report import markdown_table

    if not path.exists():
        return []
    v = json.loads(path.read_text())
    rules = ("itm", "fused", "rerank")

    def diff(d: dict) -> str:
        return (f"{d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
                + ("*" if d["significant"] else ""))

    rows = [[str(r["train_pairs"]), f"{r['two_tower']:.4f} ({r['two_tower_sd']:.4f})"]
            + [f"{r[x]:.4f} ({r[f'{x}_sd']:.4f})" for x in rules]
            + [diff(r[f"{x}_minus_two_tower"]) for x in rules] for r in v["fractions"]]
    trends = v["trend_per_doubling"]
    trend = "; ".join(f"{x} {diff(trends[x])}" for x in rules if x in trends)

    def reading(x: str) -> str:
        t = trends[x]
        return (f"{x}: " + ("no trend the validation queries resolve" if not t["significant"]
                            else "gains on the two-tower model with each doubling" if t["value"] > 0
                            else "falls further behind the two-tower model with each doubling"))
    return [f"Is fusion held back by the number of training pairs? Both models retrained on "
            f"nested fractions of the training split ({v['train_items']} pairs), "
            f"{v['seeds']} seeds each (each seed its own subsets), by `python -m "
            f"bench.fusion_learning_curve --run runs/demo-roco-sample` "
            f"({stamp(v, 'bench/fusion_learning_curve.py')}; on {ran_on(v)}): the demo's "
            "two-tower recipe (best validation epoch kept), then the roco_cpu fusion recipe "
            "initialised from that two-tower model. Validation only "
            f"({v['validation_items']} queries; the test split is not read): mean recall "
            "(R@1/5/10, both directions) averaged over the seeds (sd over seeds in brackets), "
            "and each fusion rule minus the two-tower model on per-query scores averaged over "
            "the seeds, with the paired 95 % interval (* beyond it). The rules' a and k are "
            "chosen on the same validation queries at every fraction.", "",
            markdown_table(["training pairs", "two-tower"] + [f"fusion: {x}" for x in rules]
                           + [f"{x} minus two-tower" for x in rules], rows), "",
            "What each doubling of the training pairs adds to each rule's margin over the "
            "two-tower model (least-squares slope against log2 pairs; 95 % interval from "
            f"resampling the validation queries, * beyond it): {trend}. Read by the intervals: "
            + "; ".join(reading(x) for x in rules if x in trends) + ".", "",
            f"![fusion and two-tower validation recall by training pairs]({v['figure']})", ""]


def seed_check_lines(v: dict) -> list[str]:
    """The fusion variants bench's second round: its finalists retrained with more seeds."""
    check = v.get("seed_check") or {}
    if not check.get("variants"):
        return []
    from core.report import markdown_table

    first, rows = v["one_seed"], {x["variant"]: x for x in v["variants"]}
    table = [[name, ", ".join(f"{s:.4f}" for s in c["val_mean_recall_by_seed"]),
              f"{c['val_mean_recall']:.4f}", f"{c['sd_over_seeds']:.4f}",
              "best" if name == check["best"] else _val_diff({"val_minus_best": c["minus_best"]}),
              _fusion_cost(rows[name]), "yes" if name == check["kept"] else ""]
             for name, c in check["variants"].items()]
    seeds = ", ".join(map(str, next(iter(check["variants"].values()))["seeds"]))
    return [f"With one seed each, the best was {first['best']} and the rule kept "
            f"{first['kept']}. These finalists (with the preset, where it is neither) were "
            f"trained again with {check['seeds']} seeds each (seeds {seeds}: "
            "weight initialisation, data order and sampled negatives), their per-query "
            "validation scores averaged over the seeds, and the same rule kept the variant "
            "marked:", "",
            markdown_table(["finalist", "val mean recall by seed", "mean over seeds",
                            "sd over seeds", "seed-averaged minus the best [95 % paired]",
                            "cost s", "kept"], table), ""]


def _fusion_cost(row: dict) -> str:
    """What the fusion variants bench ranks by (its ``cost_seconds``: encode its own prefix,
    train, score validation over all pairs)."""
    from bench.fusion_variants import cost_seconds

    return f"{cost_seconds(row):.0f}"


def roco_block(results_dir: Path) -> str | None:
    """The real-data section: the real demos (bench/results/roco_ccby.json,
    roco_sample.json), what moves two-tower recall (roco_variants.json) and the fusion
    recipes (fusion_variants.json), when they exist."""
    lines = (real_demo_lines(results_dir / "roco_ccby.json",
                             "rocoray demo --data datasets/roco-ccby --config roco_cpu")
             + real_demo_lines(results_dir / "roco_sample.json",
                               "rocoray demo --data ../shared/data/roco-sample --config roco_cpu")
             + fusion_variants_lines(results_dir / "fusion_variants.json")
             + learning_curve_lines(results_dir / "fusion_learning_curve.json")
             + two_tower_variants_lines(results_dir / "roco_variants.json"))
    return "\n".join(lines) if lines else None


def test_time_block(path: Path) -> str | None:
    """The test suite's measured times: bench/results/test_suite.json, written by the test
    run itself (tests/conftest.py, with ROCORAY_RECORD_TESTS=1); STALE once any file under
    tests/ was added, removed or changed since (the counts and times are of other tests)."""
    if not path.exists():
        return None
    runs = json.loads(path.read_text())["runs"]
    out = []
    for selection, r in runs.items():
        minutes, seconds = divmod(round(r["seconds"]), 60)
        # the run's argv joined; a marker expression is quoted again as a shell needs it
        command = r["command"].replace(f"-m {selection} ", f'-m "{selection}" ')
        out.append(f"- `{command}`: {r['passed']} passed, {r['failed']} failed, "
                   f"{r['skipped']} skipped in {minutes} min {seconds} s ({ran_on(r)}; "
                   f"{stamp(r, 'tests/conftest.py', also=('tests',))}; {selection})")
    return "\n".join(out)


def install_block(path: Path) -> str | None:
    """The quick start's install figure: bench/results/install_time.json (a fresh venv and
    `pip install -e .`, timed by `python -m bench.install_time`); STALE once pyproject.toml
    (what the install reads) changes."""
    if not path.exists():
        return None
    r = json.loads(path.read_text())
    minutes, seconds = divmod(round(r["seconds"]), 60)
    cache = (f"pip's cache held {r['pip_cache_before_gb']} GB before" if r["pip_cache_before_gb"]
             else "pip's cache empty")
    wheels = f", local wheels from {r['pip_find_links']}" if r.get("pip_find_links") else ""
    return (f"Measured by `python -m bench.install_time`: `{r['command']}` took {minutes} min "
            f"{seconds} s and {r['venv_gb']} GB on disk ({cache}{wheels}; Python {r['python']}; "
            f"{ran_on(r)}; {stamp(r, 'bench/install_time.py', also=('pyproject.toml',))}).")


def performance_block(results_dir: Path) -> str | None:
    from bench.summary import performance_markdown

    return (performance_markdown(results_dir, lambda r, name: stamp(r, f"bench/{r['bench']}.py"))
            if any(results_dir.glob("*.json")) else None)


def ablation_block(path: Path) -> str | None:
    from core.report import markdown_table
    from core.report.tables import ablation_rows

    if not path.exists():
        return ("Not measured at this commit: `rocoray ablation --out runs/ablation` writes "
                "the table (ablation.json, ablation.md); `rocoray demo --ablation` puts it in "
                "the report.")
    result = json.loads(path.read_text())
    epochs = {v["epochs"] for v in result["variants"]}
    return "\n".join([
        f"Measured by `rocoray ablation` (preset {result['config']}, {', '.join(map(str, epochs))} "
        f"epochs, {result['data']}, {result['split']} split, on {ran_on(result)}; "
        f"{stamp(result, 'ray_jobs/ablation.py')}):", "",
        markdown_table(*ablation_rows(result)), "", result["note"]])


BLOCKS = {
    "demo-results": lambda: demo_block(RESULTS / "demo.json"),
    "ablation-results": lambda: ablation_block(RESULTS / "ablation.json"),
    "roco-results": lambda: roco_block(RESULTS),
    "performance": lambda: performance_block(RESULTS),
    "test-times": lambda: test_time_block(RESULTS / "test_suite.json"),
    "install-time": lambda: install_block(RESULTS / "install_time.json"),
}
RESULTS = REPO / "bench" / "results"


def generate(text: str) -> str:
    """The README with every block regenerated from the committed results files."""
    for name, make in BLOCKS.items():
        if f"<!-- BEGIN {name} -->" not in text:
            continue
        body = make()
        if body is None:
            body = f"Not measured at this commit (no results file for the {name} block)."
        text = replace_block(text, name, body)
    return text


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="fail when the README differs from "
                   "what the results files generate (CI runs this)")
    args = p.parse_args(argv)
    readme = REPO / "README.md"
    text = readme.read_text()
    generated = generate(text)
    if args.check:
        if generated != text:
            import difflib

            diff = difflib.unified_diff(text.splitlines(), generated.splitlines(), "README.md",
                                        "generated", lineterm="", n=0)
            print("\n".join(list(diff)[:40]))
            print("README.md differs from what bench/results/ generates: run "
                  "`python tools/update_readme.py` and commit it", file=sys.stderr)
            return 1
        print("README.md is what bench/results/ generates")
        return 0
    readme.write_text(generated)
    print("README.md regenerated from bench/results/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
