"""The one checkpoint format: a directory holding

    model.safetensors   weights (safetensors: no pickle, nothing executed on load)
    config.yaml         the resolved ExperimentConfig (model kind, sizes, vocab size ...)
    tokenizer/          the caption tokenizer (save_pretrained)
    train_state.pt      optimizer / scheduler / epoch / step, loaded with weights_only=True

so a checkpoint is self-contained: scoring and evaluation rebuild the exact model and
tokenizer from it, and nothing untrusted is unpickled.

A training run directory (``<storage>/<name>``) holds ``result.json``, whose
``best_checkpoint`` / ``latest_checkpoint`` are paths relative to the run directory, so a
run can be moved or copied; ``resolve_checkpoint`` accepts either a checkpoint or a run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_model, save_model

from core import storage
from core.config import ExperimentConfig, config_from_dict, save_config
from core.models.kind import ModelKind

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
TOKENIZER = "tokenizer"
TRAIN_STATE = "train_state.pt"
RUN_RESULT = "result.json"


class CheckpointError(ValueError):
    pass


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / WEIGHTS).exists() and (Path(path) / CONFIG).exists()


def resolve_checkpoint(path: str | Path) -> str:
    """A checkpoint directory, or a training run directory (its best checkpoint, else its
    latest). Errors say what is missing: the path, or the checkpoint a run lists."""
    p = Path(path)
    if is_checkpoint(p):
        return str(p)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint path does not exist: {path}")
    result = p / RUN_RESULT
    if result.exists():
        info = json.loads(result.read_text())
        chosen = info.get("best_checkpoint") or info.get("latest_checkpoint")
        if not chosen:
            raise CheckpointError(f"training run {path} lists no checkpoint in {RUN_RESULT}")
        candidate = p / chosen  # relative to the run (an absolute path stays as it is)
        if not candidate.exists() and Path(chosen).is_absolute():
            candidate = p / Path(chosen).name  # a run written before paths were relative
        if not is_checkpoint(candidate):
            raise FileNotFoundError(f"training run {path}: its checkpoint {chosen} is missing")
        return str(candidate)
    raise CheckpointError(f"{path} is neither a rocoray checkpoint ({WEIGHTS} + {CONFIG}) nor "
                          f"a training run directory ({RUN_RESULT})")


def checkpoint_identity(path: str | Path) -> dict:
    """What identifies a checkpoint's content (its weights), for keying cached work."""
    return {"kind": read_checkpoint_config(path).model.kind,
            "weights": storage.file_identity(Path(path) / WEIGHTS),
            "config": storage.file_identity(Path(path) / CONFIG)}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def save_checkpoint(path: str | Path, model: torch.nn.Module, config: ExperimentConfig,
                    tokenizer=None, train_state: dict | None = None, concepts=None) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_model(unwrap(model), str(path / WEIGHTS))
    save_config(config, path / CONFIG)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path / TOKENIZER))
    if train_state is not None:
        torch.save(train_state, path / TRAIN_STATE)
    if concepts is not None:
        concepts.save(path)
    return path


def read_checkpoint_config(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    if not (path / CONFIG).exists() or not (path / WEIGHTS).exists():
        raise CheckpointError(f"{path} is not a rocoray checkpoint "
                              f"(needs {WEIGHTS} and {CONFIG})")
    return config_from_dict(yaml.safe_load((path / CONFIG).read_text()))


@dataclass
class Loaded:
    model: torch.nn.Module
    config: ExperimentConfig
    tokenizer: object | None
    path: Path
    concepts: object | None = None  # core.concepts.vocabulary.ConceptVocabulary of the concept head


def load_checkpoint(path: str | Path, expected_kind: str | None = None,
                    device: str | torch.device = "cpu") -> Loaded:
    """Rebuild the model from config.yaml and load its safetensors weights."""
    from core.concepts.vocabulary import ConceptVocabulary
    from core.data.tokenizer import load_tokenizer
    from core.models import build_model

    path = Path(path)
    config = read_checkpoint_config(path)
    if expected_kind is not None and config.model.kind != expected_kind:
        raise CheckpointError(f"checkpoint {path} holds a '{config.model.kind}' model, "
                              f"but a '{expected_kind}' model was asked for")
    model = build_model(config.model, load_weights=False)
    missing, unexpected = load_model(model, str(path / WEIGHTS), strict=False, device=str(device))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the config "
                              f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]})")
    tokenizer = load_tokenizer(path / TOKENIZER) if (path / TOKENIZER).exists() else None
    return Loaded(model.to(device).eval(), config, tokenizer, path, ConceptVocabulary.find(path))


# A two-tower model's parameters -> the fusion model's shared encoders and ITC heads.
TWO_TOWER_INTO_FUSION = {"image_encoder.": "image_encoder.", "text_encoder.": "text_encoder.",
                         "image_proj.": "itc_image_proj.", "text_proj.": "itc_text_proj.",
                         "logit_scale": "itc_logit_scale",
                         # copied when both models predict the same concepts (same shape)
                         "concept_head.": "concept_head."}
OPTIONAL_INTO_FUSION = ("concept_head.",)


def init_fusion_from_two_tower(model: torch.nn.Module, path: str | Path) -> int:
    """Copy a two-tower checkpoint's encoders and projection heads into a fusion model's
    encoders and ITC heads (as ALBEF trains its match head on contrastively trained
    encoders). Every copied tensor must fit; returns how many were copied."""
    from safetensors.torch import load_file

    config = read_checkpoint_config(path)
    if config.model.kind != ModelKind.TWO_TOWER:
        raise CheckpointError(f"{path} holds a '{config.model.kind}' model; a fusion model "
                              "initialises from a two-tower checkpoint")
    target = unwrap(model).state_dict()
    copied = {}
    for key, value in load_file(str(Path(path) / WEIGHTS)).items():
        prefix = next((p for p in TWO_TOWER_INTO_FUSION if key.startswith(p)), None)
        if prefix is None:
            continue
        name = TWO_TOWER_INTO_FUSION[prefix] + key[len(prefix):]
        if prefix in OPTIONAL_INTO_FUSION and (name not in target
                                              or target[name].shape != value.shape):
            continue
        if name not in target or target[name].shape != value.shape:
            raise CheckpointError(
                f"{path}: {key} {tuple(value.shape)} does not fit this fusion model's {name} "
                f"{tuple(target[name].shape) if name in target else '(absent)'}: the encoders, "
                "vocabulary or projection settings of the two configs differ")
        copied[name] = value
    fusion = unwrap(model)
    if fusion.config.fusion.token_proj_from_itc:
        # the fusion layers' token / patch projections start as the ITC heads: the
        # cross-attention begins in the space the two-tower model aligned (linear heads of
        # the fusion width only)
        for side in ("image", "text"):
            for part in ("weight", "bias"):
                source = f"{side}_proj.net.0.{part}"
                found = copied.get(f"itc_{source}")
                if found is None or f"{side}_proj.{part}" not in target or \
                        target[f"{side}_proj.{part}"].shape != found.shape:
                    raise CheckpointError(
                        f"model.fusion.token_proj_from_itc needs linear two-tower heads "
                        f"(model.two_tower.proj_layers=1) of the fusion width "
                        f"(model.two_tower.embed_dim = model.fusion.width); {path} has "
                        f"{tuple(found.shape) if found is not None else 'none'} for {source}")
                copied[f"{side}_proj.{part}"] = found
    fusion.load_state_dict(copied, strict=False)
    return len(copied)


def load_train_state(path: str | Path, device: str | torch.device = "cpu") -> dict | None:
    state = Path(path) / TRAIN_STATE
    if not state.exists():
        return None
    return torch.load(state, map_location=device, weights_only=True)
