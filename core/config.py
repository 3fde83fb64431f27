"""Experiment configuration: dataclasses loaded from YAML, with dotted command-line overrides.

A config is built in three layers, later ones winning:
  1. the dataclass defaults below,
  2. a preset (``core/presets/<name>.yaml``) or any YAML file given by path,
  3. ``key.sub=value`` overrides (values parsed as YAML, so ``train.lr=3e-4`` is a float).

Every run writes its resolved config (``save_config``) next to its results, and that file
loads back with ``load_config(path)`` unchanged, so any result can be reproduced.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from core.models.config import ModelConfig

PRESET_DIR = Path(__file__).parent / "presets"

@dataclass
class DataConfig:
    # Local directory, a list of Parquet files, or an fsspec URL (s3://, gs://,
    # hf://datasets/eltorio/ROCOv2-radiology).
    path: Any = "data/synthetic"
    train_split: str = "train"
    val_split: str = "validation"
    storage_options: dict = field(default_factory=dict)
    # Cap on rows read per split (None: all). Handy for smoke runs on a cluster.
    max_rows: int | None = None


@dataclass
class TrainConfig:
    epochs: int = 10
    # The fusion model's epochs when they differ (None: epochs): its cross-attention layers
    # start from scratch on frozen towers, where the two-tower's heads start from ITC.
    fusion_epochs: int | None = None
    # Which checkpoint a run keeps as its result: "best" (the highest validation mean
    # recall of any epoch) or "last" (the epochs themselves chosen on validation, as
    # bench.fusion_variants chooses them: it scores each recipe's final weights). A fusion
    # run that keeps its last checkpoint scores every validation pair only in its last
    # epoch (where the fused score's alpha is chosen); earlier epochs report ITC and
    # rerank from the ITC top-k candidates' pairs (ALBEF's validation), 2 x k x N pairs.
    keep: Literal["best", "last"] = "best"
    fusion_keep: Literal["best", "last"] | None = None  # the fusion run's (None: keep)
    batch_size: int = 64  # per worker
    lr: float = 1e-4
    # Learning rate of the pretrained encoders' trainable layers (None: ``lr``); the new
    # heads (projections, fusion layers, concept head, temperature) train at ``lr``.
    encoder_lr: float | None = None
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    # Ray Train scaling.
    num_workers: int = 1
    # Elastic training (None: off): with min_workers < num_workers Ray Train starts, and
    # restarts after a failure, with as many workers as the cluster can place between the
    # two; a node lost and not replaced, the run goes on with fewer workers from the last
    # checkpoint (each keeps batch_size, so the global batch shrinks with them) and grows
    # back when nodes join. Without it a lost node's workers wait for a replacement node.
    min_workers: int | None = None
    # An elastic run, while healthy, checks this often whether the cluster can place more
    # workers; growing restarts the workers from the last checkpoint (Ray Train's
    # ScalingConfig.elastic_resize_monitor_interval_s).
    elastic_resize_interval_s: float = 60.0
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    # How Ray places the workers' resource bundles: PACK (Ray's default: as few nodes as
    # possible), SPREAD (over nodes where it can), STRICT_SPREAD (one worker per node, or
    # the run waits for nodes), STRICT_PACK (all on one node).
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"] = "PACK"
    precision: Literal["fp32", "bf16"] = "fp32"  # autocast (GPU; core.precision)
    # Ray Data preprocessing: CPUs per map task and rows per preprocessing batch.
    preprocess_num_cpus: float = 0.5
    preprocess_batch_size: int = 64
    local_shuffle_buffer: int = 256
    # Validation: items scored per epoch (None: the whole split). Two-tower defaults to the
    # whole gallery; fusion is quadratic, so it scores a subset.
    val_max_items: int | None = None
    fusion_val_max_items: int = 256
    eval_batch_size: int = 128
    # With frozen encoder layers (model.image.freeze_stages, model.text.freeze_layers): run
    # them once over the training and validation splits before the first epoch and train
    # and validate on their outputs (no per-epoch augmentation is lost: the pipeline has
    # none).
    encode_frozen_once: bool = True
    # Where the frozen layers' outputs are kept, keyed on what produced them (weights,
    # split, preprocessing: ``core.frozen_store``), for every later run and job to reuse.
    # None: <storage_path>/cache.
    cache: str | None = None
    # Storage: local path or s3://; a run re-launched with the same name resumes.
    storage_path: str = "runs"
    name: str | None = None
    max_failures: int = 0
    checkpoints_to_keep: int = 2


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class ConfigError(ValueError):
    pass


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check and convert a YAML value to the field's type (YAML 1.1 reads "3e-4" as a str)."""
    if value is None or hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        errors = []
        for arg in typing.get_args(hint):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):  # e.g. model.kind: ModelKind
        try:
            return hint(value)
        except ValueError:
            raise ConfigError(f"{key} must be one of {', '.join(m.value for m in hint)}; "
                              f"got {value!r}") from None
    if origin is typing.Literal:  # an enumerated value: checked here, once, at load
        allowed = typing.get_args(hint)
        if isinstance(value, bool) and all(isinstance(a, str) for a in allowed):
            value = "on" if value else "off"  # YAML 1.1 reads a bare off / on as a boolean
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, allowed))}; "
                              f"got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (arg,) = typing.get_args(hint)[:1] or (Any,)
        return [_coerce(v, arg, key) for v in value]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    try:
        if hint is bool:
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise ValueError
            return value
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint is str:
            if isinstance(value, bool):  # YAML 1.1 reads a bare off / on as a boolean
                return "on" if value else "off"
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}") from None
    return value


def _from_dict(cls: type, values: dict, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
                          f"valid keys under {where or 'top level'}: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _from_dict(hint, value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, where + name)
    return cls(**kwargs)


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(overrides: Sequence[str]) -> dict:
    """``["train.lr=3e-4", "model.kind=fusion"]`` -> nested dict with YAML-parsed values."""
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else None
        if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
            value = raw.strip()  # YAML 1.1 reads on / off / yes / no as booleans: keep the word
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def read_yaml(preset_or_path: str | Path) -> dict:
    path = Path(preset_or_path)
    if not path.suffix and (PRESET_DIR / f"{preset_or_path}.yaml").exists():
        path = PRESET_DIR / f"{preset_or_path}.yaml"
    if not path.exists():
        raise ConfigError(f"config {str(preset_or_path)!r} is neither a file nor a preset "
                          f"(presets: {', '.join(preset_names())})")
    return yaml.safe_load(path.read_text()) or {}


def load_config(preset_or_path: str | Path | None = "tiny",
                overrides: Sequence[str] = ()) -> ExperimentConfig:
    values: dict = {}
    if preset_or_path is not None:
        values = read_yaml(preset_or_path)
        # A preset or file may start from another one: `base: tiny`.
        parent = values.pop("base", None)
        if parent is not None:
            values = merge(read_yaml(parent), values)
    values = merge(values, parse_overrides(overrides))
    return _from_dict(ExperimentConfig, values, "")


def resolve_fusion_run(cfg: ExperimentConfig) -> ExperimentConfig:
    """A fusion run's settings as its training reads them (in place): ``train.fusion_epochs``
    becomes ``train.epochs``, ``train.fusion_keep`` ``train.keep``, and
    ``model.fusion.freeze_encoders`` freezes both towers whole. Other kinds are returned as
    they are."""
    from core.models.kind import ModelKind

    if cfg.model.kind != ModelKind.FUSION:
        return cfg
    if cfg.train.fusion_epochs is not None:
        cfg.train.epochs, cfg.train.fusion_epochs = cfg.train.fusion_epochs, None
    if cfg.train.fusion_keep is not None:
        cfg.train.keep, cfg.train.fusion_keep = cfg.train.fusion_keep, None
    if cfg.model.fusion.freeze_encoders:
        cfg.model.image.freeze_stages = cfg.model.text.freeze_layers = -1
    return cfg


def _plain(items) -> dict:
    return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in items}


def to_dict(config: Any) -> dict:
    """The config as plain YAML / JSON values (enums as their names' values)."""
    return dataclasses.asdict(config, dict_factory=_plain)


def save_config(config: ExperimentConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    return path


# Keys older rocoray versions wrote into checkpoints and run configs, no longer read.
RETIRED_KEYS = {"data": ("test_split",)}


def config_from_dict(values: dict) -> ExperimentConfig:
    """A saved config (a checkpoint's, a run's); keys retired since it was written are
    dropped (``RETIRED_KEYS``), so older checkpoints still load."""
    values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for section, keys in RETIRED_KEYS.items():
        for key in keys:
            values.get(section, {}).pop(key, None)
    return _from_dict(ExperimentConfig, values, "")
