"""Ray Tune over TorchTrainer trials (Ray Train V2 pattern): a short search finishes, an
interrupted experiment resumes without rerunning finished trials, TensorBoard logs exist,
and the best trial's config trains as is."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_config
from core.search_space import SearchSpaceError, load_search_space

REPO = Path(__file__).resolve().parents[1]


def test_search_spaces_load_and_name_real_config_keys(tmp_path):
    for name, metric in (("two_tower.yaml", "val/mean_recall"),
                         ("fusion.yaml", "val/rerank/mean_recall"),
                         ("concepts.yaml", "val/concept_f1"),
                         ("mcr.yaml", "val/mean_recall")):  # what each trial reports
        space = load_search_space(REPO / "tune_spaces" / name)
        assert space.params and space.metric == metric
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: two_tower\nparams:\n  model.two_tower.temprature: {choice: [0.1]}\n")
    with pytest.raises(Exception, match="temprature"):
        load_search_space(bad)
    bad.write_text("model: two_tower\nparams:\n  train.lr: {between: [1, 2]}\n")
    with pytest.raises(SearchSpaceError, match="train.lr"):
        load_search_space(bad)
    # a misspelt scheduler is named, not quietly run without early stopping
    bad.write_text("model: two_tower\nscheduler: {type: hyperband}\n"
                   "params:\n  model.two_tower.temperature: {choice: [0.1]}\n")
    with pytest.raises(SearchSpaceError, match="scheduler"):
        load_search_space(bad)


def test_short_trial_names_stay_unique():
    from ray_jobs.tune import short_trial_name

    # an all-digit experiment id (96262) must not swallow the trial index
    names = [f"trial_driver_96262_0000{i}_{i}_model_two_tower_embed_dim=256,lr=0.1_2026-11-22"
             for i in range(3)]
    assert [short_trial_name(n) for n in names] == [f"trial_driver_96262_0000{i}" for i in range(3)]
    assert short_trial_name("trial_driver_2bfe1_00002") == "trial_driver_2bfe1_00002"
    assert short_trial_name("trial_driver_423c85fa_1_overrides=train_batch_size_32_2026-11-22") == \
        "trial_driver_423c85fa_1"  # Optuna's trial ids
    assert short_trial_name("something-else") == "something-else"


@pytest.mark.timeout(900)
def test_tune_search_resume_and_best_config(ray_session, synthetic_dir, tmp_path, monkeypatch):
    import ray

    from ray_jobs.runtime import init_ray
    from ray_jobs.tune import TuneArgs, run

    # A RELATIVE data path, as a user types it: trials run in their own directories.
    monkeypatch.chdir(synthetic_dir.parent)
    args = TuneArgs(space=str(REPO / "tune_spaces" / "two_tower.yaml"), data=synthetic_dir.name,
                    name="exp", storage_path=str(tmp_path), num_samples=2, epochs=2,
                    set=["train.batch_size=32", "train.eval_batch_size=64"])
    # the first trial driver to start dies once (test-only switch, through a fresh Ray)
    monkeypatch.setenv("ROCORAY_FAULTS", f"tune.trial=1@{tmp_path / 'markers'}")
    ray.shutdown()
    init_ray(num_cpus=2, progress_bars=False)
    first = run(args)  # an interrupted experiment
    status = {t["trial"]: t["status"] for t in first["trials"]}
    assert sorted(status.values()) == ["ERROR", "OK"]
    done = next(t for t in first["trials"] if t["status"] == "OK")

    second = run(args)  # same name: Tuner.restore
    rows = {t["trial"]: t for t in second["trials"]}
    assert all(t["status"] == "OK" for t in rows.values())
    assert rows[done["trial"]] == done  # the finished trial was not run again
    experiment = tmp_path / "exp"
    assert (experiment / "trials.csv").exists() and (experiment / "summary.md").exists()
    # TensorBoard's own reader loads the event files, with the curves the README names
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted(experiment.rglob("events.out.tfevents*"))
    assert events
    tags = set()
    for path in events:
        reader = EventAccumulator(str(path))
        reader.Reload()
        tags |= set(reader.Tags()["scalars"])
    for metric in ("val/mean_recall", "train/loss"):
        assert any(tag.endswith(metric) for tag in tags), sorted(tags)[:20]
    best = load_config(second["best"]["config"])  # what `rocoray train --config` loads
    assert best.model.kind == "two_tower" and best.train.name is None
    for key, value in second["best"]["values"].items():
        section, *rest = key.split(".")
        node = getattr(best, section)
        for part in rest[:-1]:
            node = getattr(node, part)
        assert getattr(node, rest[-1]) == pytest.approx(value)
