"""One typed scoring-settings object (k, rerank k, alpha, tiles, precision) with one default
each, checked once where a command line is read and handed whole to every job; the model
kind an enum checked once at config load."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from core.config import ConfigError, load_config, to_dict
from core.models.kind import ModelKind
from core.scoring.settings import Method, ScoringSettings, SettingsError
from tests.test_cli import rocoray


@pytest.mark.parametrize("changes,flag", [
    ({"rerank_k": 0}, "--rerank-k"), ({"k": -1}, "--k"), ({"block": 0}, "--block"),
    ({"chunk": 2.5}, "--chunk"), ({"precision": "fp16"}, "--precision"),
    ({"alpha": float("nan")}, "--alpha")])
def test_settings_are_checked_where_they_are_built(changes, flag):
    with pytest.raises(SettingsError, match=flag):
        ScoringSettings(**changes)
    with pytest.raises(SettingsError, match=flag):  # and on every copy
        ScoringSettings().replace(**changes)


def test_the_size_checks_of_every_job():
    s = ScoringSettings(k=10, rerank_k=32)
    s.check(Method.TWO_TOWER, 10, "the gallery")  # two-tower needs K items, not rerank's 32
    with pytest.raises(SettingsError, match="top-32 asked for .* holds only 31"):
        s.check(Method.RERANK, 31, "the gallery")
    with pytest.raises(SettingsError, match="--k 40 must not exceed --rerank-k 32"):
        s.replace(k=40).check(Method.RERANK, 100, "the gallery")
    assert s.capped(16) == ScoringSettings(k=10, rerank_k=16)
    assert Method.RERANK.models == (ModelKind.FUSION, ModelKind.TWO_TOWER)


def test_every_job_starts_from_the_one_default():
    """score, evaluate and the demo parse to ScoringSettings() with no flags; serve's rerank
    default is the same object's; the fusion model's validation rerank k defers to it."""
    from ray_jobs import demo, evaluate, score, serve
    from ray_jobs.options import parse

    parsed = [parse(score.ScoreConfig, ["--model", "fusion", "--checkpoint", "x"], "s", None),
              parse(evaluate.EvaluateConfig, ["--two-tower", "a", "--fusion", "b"], "e", None),
              parse(demo.DemoConfig, [], "d", None)]
    for cfg in parsed:
        assert cfg.scoring == ScoringSettings()
    assert parsed[0].model is Method.FUSION
    cfg = parse(serve.ServeConfig, ["--two-tower", "a"], "v", None)
    assert serve.rerank_choice(cfg)[0] == ScoringSettings()
    assert load_config("tiny").model.fusion.rerank_k is None
    flags = parse(demo.DemoConfig, ["--rerank-k", "16", "--block", "8", "--alpha", "2"], "d", None)
    assert flags.scoring == ScoringSettings(rerank_k=16, block=8, alpha=2.0)


@pytest.mark.parametrize("job,args", [
    ("score", ["--model", "rerank", "--checkpoint", "x", "--rerank-k", "0"]),
    ("demo", ["--rerank-k", "0"]),
    ("serve", ["--two-tower", "x", "--rerank-k", "0"])])
def test_a_bad_setting_is_one_line_and_exit_code_2(job, args):
    out = rocoray(job, *args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--rerank-k must be a whole number of at least 1" in lines[0]
    assert "Traceback" not in out.stderr


def test_the_model_kind_is_an_enum_checked_once_at_load():
    cfg = load_config("tiny", ["model.kind=fusion"])
    assert cfg.model.kind is ModelKind.FUSION
    with pytest.raises(ConfigError, match="model.kind must be one of two_tower, fusion; got 'rerank'"):
        load_config("tiny", ["model.kind=rerank"])
    saved = yaml.safe_load(yaml.safe_dump(to_dict(cfg)))  # written as a plain string
    assert saved["model"]["kind"] == "fusion"
    assert dataclasses.asdict(ScoringSettings()) == ScoringSettings().as_dict()
