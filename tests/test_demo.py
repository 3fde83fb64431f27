"""The main job end to end, as a user runs it: prepare -> train both models -> score three
ways -> evaluate -> report. On a small synthetic set in a subprocess (its whole log is
checked), its leakage canary, and its models evaluated on the REAL chest X-ray sample."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from core.scoring.settings import ScoringSettings

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--epochs", "1", "--rerank-k", "16", "--block", "16",
         "--set", "train.batch_size=32", "train.fusion_val_max_items=32"]


class Report(HTMLParser):
    """What a reader sees in report.html: sections by id, images by class, figure captions."""

    def __init__(self):
        super().__init__()
        self.ids, self.img_classes, self.captions, self.text = {}, [], [], []
        self._open = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids[attrs["id"]] = len(self.text)
        if tag == "img":
            self.img_classes.append(attrs.get("class", ""))
        self._open.append(tag)

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        self.text.append(data)
        if self._open and self._open[-1] == "figcaption":
            self.captions.append(data)


def strict_json(path: Path):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name} in {path}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


@pytest.fixture(scope="module")
def synthetic_demo(tmp_path_factory):
    """`rocoray demo` on a small synthetic set, run once as a user runs it (a subprocess with
    its own Ray): (its directory, its whole log, its stdout)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()  # the demo starts its own Ray, as a user's run does
    tmp_path = tmp_path_factory.mktemp("synthetic-demo")
    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ray_jobs.demo", "--synthetic-dir", str(tmp_path / "synthetic"),
         "--n-train", "256", "--n-val", "64", "--n-test", "64", "--out", str(out), *SMALL],
        cwd=REPO, capture_output=True, text=True, timeout=840, env=env)
    log = proc.stdout + proc.stderr
    (tmp_path / "demo.log").write_text(log)
    assert proc.returncode == 0, log[-4000:]
    return tmp_path, log, proc.stdout


@pytest.mark.timeout(900)
def test_demo_on_small_synthetic_data_log_and_report(synthetic_demo):
    tmp_path, log, stdout = synthetic_demo
    out = tmp_path / "demo"

    # a log a person can read
    lines = log.splitlines()
    noise = [line for line in lines if re.search(r"ERROR|Traceback|[Dd]eprecat|core_worker\.cc"
                                                  r"|Reporting training result|execution finished"
                                                  r"|Progress bars disabled", line)]
    assert noise == [], noise[:5]
    assert "\x1b[" not in log  # no colour codes when piped
    assert max(len(line) for line in lines) <= 300, max(lines, key=len)[:300]
    epoch_lines = [line for line in lines if re.search(r"epoch 1/1, loss", line)]
    assert len(epoch_lines) == 2  # one formatted line per epoch and model, no dict dumps
    assert not any(re.search(r"\{'epoch':", line) for line in lines)
    assert "report:" in stdout and "rerank" in stdout

    # a report that concludes, in strict JSON and readable HTML
    metrics = strict_json(out / "eval" / "metrics.json")
    assert set(metrics["methods"]) == {"two_tower", "fusion", "rerank"}
    verdict = metrics["comparison"]["verdict"]
    assert verdict["t2i"].startswith("Text → image: At R@1") and "beyond noise" in verdict["summary"]
    assert {x["metric"] for x in metrics["comparison"]["differences"]} == {"R@1", "R@5", "R@10", "MRR"}
    assert [h["epoch"] for h in metrics["training"]["fusion"]["history"]] == [1]
    html = (out / "eval" / "report.html").read_text(encoding="utf-8")
    page = Report()
    page.feed(html)
    assert {"verdict", "training", "examples"} <= set(page.ids)
    text = "".join(page.text)
    assert verdict["summary"] in text
    assert "fig-training" in page.img_classes and "fig-recall" in page.img_classes
    assert any(c.startswith("#1") for c in page.captions)  # ranked thumbnails
    assert "its own caption:" in text and "`" not in text  # no literal markdown in HTML
    assert "°" not in html or "charset='utf-8'" in html
    # concepts: both image-only heads and the chance detector, thresholds from validation;
    # concept-aware retrieval for the three methods and a random ranking, both directions
    concepts = metrics["concepts"]
    detection = concepts["detection"]["methods"]
    assert set(detection) == {"two_tower", "fusion", "chance"}
    for d in detection.values():
        assert "chosen on validation" in d["threshold_source"]
    # a trained head ranks the images that carry a concept above the priors' ranking
    assert detection["fusion"]["macro_ap"] > detection["chance"]["macro_ap"]
    assert abs(detection["chance"]["macro_auroc"] - 0.5) < 1e-9
    retrieval = concepts["retrieval"]["test"]
    assert set(retrieval) == {"two_tower", "fusion", "rerank", "random"}
    against_train = concepts["retrieval"]["train"]  # test queries, training-split gallery
    assert set(against_train) == {"two_tower", "fusion", "rerank", "random"}
    assert against_train["fusion"]["i2t"]["queries"] == 64
    assert set(retrieval["rerank"]) == {"t2i", "i2t"}
    assert set(retrieval["fusion"]["t2i"]) == {"nDCG@5", "P@5", "mAP@10", "MRR@10", "queries"}
    assert "Concept detection" in text and "gallery: the train split" in text
    # explanations of test pairs with lesion boxes, scored for localisation, drawn
    explained = metrics["explanations"]
    assert explained["available"] and explained["cases"] >= 3
    assert "random map" in explained["localisation"] and "fusion Grad-CAM (ITM)" in explained["localisation"]
    # a random map spreads its energy evenly: its share inside a box is about the box's area
    assert explained["localisation"]["random map"]["energy"]["value"] == pytest.approx(
        explained["mean_box_area"], abs=0.03)
    assert "explanations" in page.ids and "fig-explanations" in page.img_classes
    assert html.count("class='tokens'") == 6  # token-shaded captions: 3 pairs + 3 queries
    assert "fig-top3" in page.img_classes  # Grad-CAM on the example queries' top-3
    # report quality of the retrieved captions, NLG@1..10, with oracle and random rows
    cq = metrics["caption_quality"]
    assert cq["ks"] == list(range(1, 11))
    assert set(cq["curves"]) == {"two_tower", "fusion", "rerank", "random", "oracle"}
    assert "METEOR" in cq["metrics"] or "Java" in cq["missing"]["METEOR"]
    assert cq["curves"]["oracle"]["t2i"]["ROUGE-L"][0] > 0.99
    assert "nlg" in page.ids and "fig-nlg" in page.img_classes
    # the modality gap of the two-tower embeddings and of the fusion ITC heads, drawn
    gap = metrics["modality_gap"]["models"]
    assert set(gap) == {"two-tower (AbM)", "fusion ITC heads (AbM)"}
    assert all(g["n"] == 64 for g in gap.values())
    assert "modality-gap" in page.ids and "fig-gap" in page.img_classes
    assert metrics["ablation"] is None  # `rocoray demo --ablation` adds the table
    history = metrics["training"]["two_tower"]["history"][-1]
    assert history["val/concept_f1"] > 0 and history["train/concept_loss"] > 0
    strict_json(out / "summary.json")

    # leakage guards: rerank's k and alpha, and the concept thresholds, come from validation
    assert metrics["rerank_selection"]["split"] == "validation"


@pytest.mark.timeout(600)
def test_leakage_canary_test_labels_permuted(synthetic_demo, tmp_path):
    """The test split's labels permuted (captions and concept ids shuffled over its images):
    whatever evaluate chose on validation must not move; the test figures must."""
    import shutil

    import numpy as np
    import pyarrow.parquet as pq

    from ray_jobs.evaluate import EvaluateConfig, run

    demo_dir, _, _ = synthetic_demo
    demo = demo_dir / "demo"
    metrics = strict_json(demo / "eval" / "metrics.json")
    permuted = tmp_path / "permuted"
    shutil.copytree(demo_dir / "synthetic", permuted)
    rng = np.random.default_rng(0)
    for shard in sorted(permuted.glob("test-*.parquet")):
        table = pq.read_table(shard)
        order = rng.permutation(table.num_rows)
        for name in ("caption", "cui"):
            table = table.set_column(table.schema.get_field_index(name), name,
                                     table.column(name).take(order))
        pq.write_table(table, shard)
    summary = json.loads((demo / "summary.json").read_text())
    runs = {k: v["path"] for k, v in summary["training"].items()}
    canary = run(EvaluateConfig(two_tower=runs["two_tower"], fusion=runs["fusion"],
                                data=str(permuted), out=str(tmp_path / "canary"),
                                scoring=ScoringSettings(rerank_k=16, block=16), explain_cases=0, scaling_points=2, examples=1))
    chosen = lambda m: (m["rerank_selection"]["k"], m["rerank_selection"]["alpha"],  # noqa: E731
                        m["rerank_selection"]["table"],
                        {k: d["threshold"] for k, d in m["concepts"]["detection"]["methods"].items()})
    assert chosen(canary) == chosen(metrics)
    assert canary["methods"]["fusion"]["metrics"] != metrics["methods"]["fusion"]["metrics"]


@pytest.mark.timeout(600)
def test_evaluation_and_report_on_the_real_sample(synthetic_demo, real_sample, tmp_path):
    """The demo's models evaluated on the REAL chest X-ray sample (grey radiographs, no concept
    ids, no lesion boxes): every row scored, the optional sections say why they are empty,
    the explanations switch to agreement and faithfulness, and the report names exactly the
    results at chance. (Training on real figures: tests/test_real_roco.py; Tune:
    tests/test_tune_ray.py.)"""
    from ray_jobs.evaluate import EvaluateConfig, run

    summary = json.loads((synthetic_demo[0] / "demo" / "summary.json").read_text())
    runs = {k: v["path"] for k, v in summary["training"].items()}
    out = tmp_path / "eval"
    run(EvaluateConfig(two_tower=runs["two_tower"], fusion=runs["fusion"], data=str(real_sample),
                       out=str(out), scoring=ScoringSettings(rerank_k=16, block=16),
                       scaling_points=2))
    metrics = strict_json(out / "metrics.json")
    assert metrics["gallery_size"] == 38  # every test row of the sample decoded and scored
    assert set(metrics["methods"]) == {"two_tower", "fusion", "rerank"}
    for m in metrics["methods"].values():
        assert m["timings"]["pairs_per_s"] > 0
    # the headline recall is what the stored ranks say (38 queries, exact ranks)
    from core.scoring import outputs

    for m in ("two_tower", "fusion", "rerank"):
        ranks = outputs.read_topk(str(out / m), "t2i")[2]
        assert metrics["methods"][m]["metrics"]["t2i"]["R@10"] == pytest.approx(
            float((ranks < 10).mean()))
    assert metrics["scaling"]["exponents"]["fusion"] is None  # 38 items cannot support a slope
    for name in ("report.md", "report.html", "figures/recall_at_k.png",
                 "figures/time_vs_gallery.png", "figures/training_curves.png"):
        assert (out / name).stat().st_size > 0, name
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 4  # charts and thumbnails are embedded
    # the sample has no concept ids: the concept sections say so, nothing crashes
    assert metrics["concepts"] == {"available": False,
                                   "reason": "n/a: no concept ids in this data"}
    assert "n/a: no concept ids in this data" in html
    # no lesion boxes in real figures: the maps are scored by agreement and faithfulness
    ex = metrics["explanations"]
    assert ex["available"] is True and ex["mode"] == "agreement" and ex["cases"] > 0
    assert "Explanations: agreement and faithfulness" in html
    # the report names exactly the (method, direction) results the comparison found at
    # chance, and warns about none when none is
    from core.evaluation.comparison import DIRECTIONS, LABELS
    at_chance = metrics["comparison"]["at_chance"]
    named = [f"{LABELS[m]} ({d})" for m in at_chance for d in DIRECTIONS if at_chance[m][d]]
    if named:
        warning = re.search(r"Indistinguishable from chance \(the Recall@10 interval includes "
                            r"the chance level\): ([^.]*)\.", html)
        assert warning and warning.group(1).split(", ") == named
    else:
        assert "Indistinguishable from chance" not in html
