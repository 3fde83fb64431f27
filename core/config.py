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
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

PRESET_DIR = Path(__file__).parent / "presets"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageEncoderConfig:
    # torchvision "resnet18" / "resnet34" / "resnet50", "efficientnet_lite0" (ImageNet
    # weights from a pinned package: works offline), or "small_cnn" for CPU presets.
    arch: str = "resnet50"
    # ImageNet weights (torchvision's download for ResNets, the packaged file for
    # efficientnet_lite0). When they cannot be loaded the model does not build (an error
    # naming what is missing): never a silent random init.
    pretrained: bool = False
    image_size: int = 224
    # Channel widths of the small_cnn stages (each stage halves the resolution).
    cnn_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    # Input normalisation on [0, 1] pixels; None: what the architecture's weights were
    # trained with (ImageNet's for ResNets and small_cnn, 0.498 / 0.502 for EfficientNet-Lite).
    mean: list[float] | None = None
    std: list[float] | None = None
    # Leading backbone stages frozen (weights fixed, BatchNorm statistics kept); -1: all.
    freeze_stages: int = 0


@dataclass
class TextEncoderConfig:
    # A Hugging Face model name or local path (BERT family); sentence-transformers/
    # all-MiniLM-L6-v2 loads from its pinned package, offline. None: a BertModel built from
    # the sizes below, randomly initialised.
    name_or_path: str | None = None
    # A Hugging Face tokenizer name or path. None: the pretrained model's own tokenizer when
    # name_or_path is set; else <data>/tokenizer if present, else a WordPiece vocabulary
    # trained on the training captions.
    tokenizer: str | None = None
    # The embeddings and this many leading transformer layers frozen; -1: the whole encoder.
    freeze_layers: int = 0
    vocab_size: int = 30522  # overwritten by the tokenizer's size when built from config
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_length: int = 64
    pooling: Literal["cls", "mean"] = "cls"  # [CLS], or the masked mean over tokens
    # Size of the WordPiece vocabulary trained offline.
    trained_vocab_size: int = 8000


@dataclass
class FusionConfig:
    width: int = 256
    num_layers: int = 2
    num_heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    # Negatives per positive pair, in each direction (k images per caption, k captions per image).
    negatives_per_positive: int = 3
    # "random", "hard" (sampled by pooled-feature similarity, ALBEF) or "hardest" (top-k).
    negative_mode: Literal["random", "hard", "hardest"] = "hard"
    # Weight of an auxiliary InfoNCE on the pooled features (ALBEF's ITC); it makes the
    # "hard" negatives meaningful. 0 disables it.
    contrastive_weight: float = 0.1
    # Temperature of the similarity that hard negatives are sampled by.
    temperature: float = 0.07
    # Caption negatives with one attribute word swapped (NegCLIP-style), for the match head:
    # "a:b" word pairs (single tokens of the vocabulary); empty: off.
    swap_negatives: list[str] = field(default_factory=lambda: [
        "left:right", "upper:lower", "superior:inferior"])
    # A two-tower checkpoint or training run whose encoders and projection heads initialise
    # this model's encoders and ITC heads (ALBEF / BLIP: the match head is trained on
    # contrastively trained encoders). None: from scratch.
    init_from: str | None = None
    # Train only the fusion layers and heads: both encoders (initialised from init_from)
    # frozen whole, and so encoded once (train.encode_frozen_once). Resolved at the start of
    # a run into model.image.freeze_stages = model.text.freeze_layers = -1.
    freeze_encoders: bool = False
    # With init_from: the fusion layers' token and patch projections start as the two-tower
    # model's (linear) ITC heads, so cross-attention begins in the space the two-tower
    # model aligned (needs model.two_tower.proj_layers 1 and embed_dim = width).
    token_proj_from_itc: bool = False
    # The ranking score over all pairs: match logit + score_alpha x the ITC cosine (the
    # fused score, as ALBEF/BLIP combine ITM and ITC); 0: the match logit alone. None: chosen
    # on the validation split after every epoch (from FUSED_SCORE_ALPHAS), and the checkpoint
    # records the number it chose.
    score_alpha: float | None = 0.0
    # Retrieve-and-rerank inside the fusion model, in validation: the ITC top-k re-scored by
    # the match logit + rerank_alpha x the ITC cosine (the fused score).
    rerank_k: int = 16
    rerank_alpha: float = 0.0


@dataclass
class TwoTowerConfig:
    embed_dim: int = 256
    proj_layers: int = 2  # 1 = linear projection
    proj_hidden: int = 1024
    proj_dropout: float = 0.0  # dropout on the pooled features the projections read
    temperature: float = 0.07
    learnable_temperature: bool = True
    max_logit_scale: float = 100.0  # CLIP clamps exp(logit_scale) at 100
    # "abm": Aggregation-before-Mapping (pool the encoder's patches / tokens, then project:
    # CLIP's way); "mba": Mapping-before-Aggregation (project every patch and token into the
    # shared space, then pool them with learned attention).
    alignment: Literal["abm", "mba"] = "abm"


@dataclass
class McrConfig:
    """Masked contrastive reconstruction (two-tower): masked inputs for the contrastive loss
    and for reconstructing what was masked (image cells, caption tokens)."""

    # "off"; "masked_single": the masked inputs are the only inputs of both the contrastive
    # and the reconstruction losses (one forward per modality); "dual_stream": masked inputs
    # for reconstruction, unmasked ones for the contrastive loss (two forwards).
    mode: Literal["off", "masked_single", "dual_stream"] = "off"
    # Share of the image encoder's output grid cells zeroed (in pixel space, standardised).
    image_mask_ratio: float = 0.5
    # Share of caption tokens replaced by [MASK] (never [CLS], [SEP] or padding).
    text_mask_ratio: float = 0.25
    lambda_img: float = 1.0  # weight of the masked-cell pixel MSE
    lambda_txt: float = 1.0  # weight of the masked-token cross-entropy


@dataclass
class ConceptConfig:
    # Weight of the auxiliary concept-detection loss (ROCOv2's UMLS ``cui`` column): an
    # image-only multi-label head on the image encoder's pooled features. 0: no head.
    weight: float = 0.0
    # Concepts on fewer training images than this are left out of the vocabulary.
    min_count: int = 1
    # Focal term (Lin et al.) on top of BCE; 0 = plain BCE.
    focal_gamma: float = 0.0
    # Positive weight per concept = negatives / positives, capped here for rare concepts.
    max_pos_weight: float = 10.0
    dropout: float = 0.1
    # Head size: set from the concept vocabulary when a run starts (0: no head).
    num_concepts: int = 0


@dataclass
class ModelConfig:
    kind: Literal["two_tower", "fusion"] = "two_tower"
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    two_tower: TwoTowerConfig = field(default_factory=TwoTowerConfig)
    concepts: ConceptConfig = field(default_factory=ConceptConfig)
    mcr: McrConfig = field(default_factory=McrConfig)


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


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


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
