"""Configs (presets, YAML, overrides) and the safetensors checkpoint format."""

from __future__ import annotations

import pytest
import torch

from core.checkpoint import (CheckpointError, load_checkpoint, load_train_state,
                             save_checkpoint)
from core.config import ConfigError, load_config, save_config
from core.models import build_model


def test_presets_and_overrides(tmp_path):
    tiny = load_config("tiny", ["train.lr=3e-4", "model.kind=fusion", "model.fusion.num_layers=3"])
    assert tiny.train.lr == 3e-4 and tiny.model.kind == "fusion"
    assert tiny.model.fusion.num_layers == 3 and tiny.model.image.arch == "small_cnn"
    base = load_config("base")
    assert base.model.image.arch == "resnet50" and base.train.use_gpu and base.train.precision == "bf16"
    path = save_config(tiny, tmp_path / "config.yaml")
    assert load_config(path) == tiny  # a run's resolved config loads back unchanged
    child = tmp_path / "child.yaml"
    child.write_text("base: tiny\ntrain:\n  epochs: 1\n")
    assert load_config(child).model.image.arch == "small_cnn" and load_config(child).train.epochs == 1


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="train.lrr"):
        load_config("tiny", ["train.lrr=1"])
    with pytest.raises(ConfigError, match="presets: base, roco_cpu, tiny"):
        load_config("nope")
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config("tiny", ["train.lr"])


@pytest.mark.parametrize("kind", ["fusion", "two_tower"])
def test_checkpoint_round_trip(tmp_path, kind, tiny_tokenizer):
    cfg = load_config("tiny", [f"model.kind={kind}"])
    cfg.model.text.vocab_size = len(tiny_tokenizer)
    model = build_model(cfg.model)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 3, 64, 64), torch.ones(2, 48, dtype=torch.long),
          torch.ones(2, 48, dtype=torch.long))[0].sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "ckpt", model, cfg, tiny_tokenizer,
                    {"optimizer": opt.state_dict(), "epoch": 3})
    loaded = load_checkpoint(tmp_path / "ckpt", expected_kind=kind)
    saved, rebuilt = model.state_dict(), loaded.model.state_dict()
    assert saved.keys() == rebuilt.keys()  # a tensor missing on either side fails here
    for name, value in saved.items():
        assert torch.equal(value, rebuilt[name]), name
    assert len(loaded.tokenizer) == len(tiny_tokenizer)
    state = load_train_state(tmp_path / "ckpt")  # weights_only=True: no arbitrary pickles
    assert state["epoch"] == 3 and "state" in state["optimizer"]
    other = "two_tower" if kind == "fusion" else "fusion"
    with pytest.raises(CheckpointError, match=f"holds a '{kind}' model"):
        load_checkpoint(tmp_path / "ckpt", expected_kind=other)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a rocoray checkpoint"):
        load_checkpoint(tmp_path)


def test_pickled_train_state_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    cfg = load_config("tiny")
    save_checkpoint(tmp_path, build_model(cfg.model), cfg)
    torch.save({"x": Evil()}, tmp_path / "train_state.pt", pickle_module=pickle)
    with pytest.raises(pickle.UnpicklingError):
        load_train_state(tmp_path)


def test_values_are_typed():
    cfg = load_config("tiny", ["train.lr=3e-4", "train.epochs=2", "train.use_gpu=false",
                               "train.val_max_items=null"])
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 2 and cfg.train.use_gpu is False and cfg.train.val_max_items is None
    with pytest.raises(ConfigError, match="train.epochs: expected int"):
        load_config("tiny", ["train.epochs=two"])


@pytest.mark.parametrize("override, message", [
    ("model.kind=fuson", "model.kind must be one of two_tower, fusion; got 'fuson'"),
    ("train.precision=fp16", "train.precision must be one of fp32, bf16; got 'fp16'"),
    ("model.two_tower.alignment=mab", "model.two_tower.alignment must be one of abm, mba"),
    ("model.mcr.mode=dual", "model.mcr.mode must be one of off, masked_single, dual_stream"),
    ("model.fusion.negative_mode=easy", "model.fusion.negative_mode must be one of random"),
    ("model.text.pooling=max", "model.text.pooling must be one of cls, mean"),
])
def test_enumerated_values_are_checked_once_at_load(override, message):
    with pytest.raises(ConfigError) as exc:
        load_config("tiny", [override])
    assert message in str(exc.value)
    assert load_config("tiny", ["model.mcr.mode=off"]).model.mcr.mode == "off"  # YAML's "off"
