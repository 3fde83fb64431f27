"""Search spaces as data: the YAML files in tune_spaces/, checked and turned into plain
descriptions that the Tune job maps onto ``ray.tune`` samplers (core never imports ray)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.config import ExperimentConfig, config_from_dict, load_config, merge, parse_overrides

SAMPLERS = ("choice", "grid", "uniform", "loguniform", "randint")


class SearchSpaceError(ValueError):
    pass


@dataclass
class Param:
    key: str  # a config path, e.g. "model.two_tower.temperature"
    sampler: str  # one of SAMPLERS
    values: list


@dataclass
class SearchSpace:
    model: str
    config: str = "tiny"
    metric: str = "val/mean_recall"
    mode: str = "max"
    search: str = "random"
    num_samples: int = 4
    max_concurrent_trials: int = 2
    epochs: int = 3
    scheduler: dict = field(default_factory=lambda: {"type": "asha"})
    overrides: list = field(default_factory=list)
    params: list[Param] = field(default_factory=list)

    def trial_config(self, values: dict, extra_overrides=(),
                     base: dict | None = None) -> ExperimentConfig:
        """The full experiment config of one trial: preset + fixed overrides + sampled values.
        ``base``: a whole config (``core.config.to_dict``) in place of the space's preset, as
        a job that runs a search hands it over."""
        overrides = [f"model.kind={self.model}", f"train.epochs={self.epochs}",
                     *self.overrides, *extra_overrides]
        overrides += [f"{k}={_yaml_scalar(v)}" for k, v in values.items()]
        if base is not None:
            return config_from_dict(merge(base, parse_overrides(overrides)))
        return load_config(self.config, overrides)


def _yaml_scalar(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def load_search_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"search space file does not exist: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    params_raw = raw.pop("params", None)
    if not params_raw:
        raise SearchSpaceError(f"{path}: no `params` to search")
    unknown = set(raw) - {f for f in SearchSpace.__dataclass_fields__ if f != "params"}
    if unknown:
        raise SearchSpaceError(f"{path}: unknown key(s) {sorted(unknown)}")
    if "model" not in raw:
        raise SearchSpaceError(f"{path}: `model` (two_tower or fusion) is required")
    space = SearchSpace(**raw)
    if space.search not in ("random", "grid", "optuna"):
        raise SearchSpaceError(f"{path}: search must be random, grid or optuna, got {space.search!r}")
    if space.mode not in ("max", "min"):
        raise SearchSpaceError(f"{path}: mode must be max or min")
    if not isinstance(space.scheduler, dict) or space.scheduler.get("type") not in ("asha", "fifo"):
        raise SearchSpaceError(f"{path}: scheduler must be {{type: asha}} (early stopping) or "
                               f"{{type: fifo}} (every trial runs every epoch), got {space.scheduler!r}")
    for key, spec in params_raw.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
            raise SearchSpaceError(f"{path}: param {key!r} must be one of "
                                   f"{', '.join('{' + s + ': ...}' for s in SAMPLERS)}")
        sampler, values = next(iter(spec.items()))
        if sampler in ("uniform", "loguniform", "randint") and len(values) != 2:
            raise SearchSpaceError(f"{path}: {key} {sampler} needs [low, high]")
        space.params.append(Param(key, sampler, list(values)))
    # Every key must be a real config path: fail before any trial starts.
    probe = {p.key: (p.values[0]) for p in space.params}
    space.trial_config(probe)
    return space
