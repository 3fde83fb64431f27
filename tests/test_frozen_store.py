"""The frozen store: keyed on what the frozen layers compute with (their weights, the
preprocessing, the split), shared by the two models when they share frozen towers, and read
back by the training workers as equal shards."""

from __future__ import annotations

import copy

import numpy as np
import torch

from core.config import load_config
from core.frozen_store import FrozenStore, StoredSplit, frozen_identity, store_key
from core.models import build_model

SPLIT = {"source": "data", "split": "train", "shards": [["train-0.parquet", 10, "t"]]}


def frozen_tiny(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = load_config("tiny", [f"model.kind={kind}", "model.image.freeze_stages=-1",
                               "model.text.freeze_layers=-1"])
    cfg.model.text.vocab_size = 300
    return build_model(cfg.model), cfg


class Tokenizer:  # what store_key reads of a tokenizer
    def __init__(self, words):
        self.words = words

    def get_vocab(self):
        return {w: i for i, w in enumerate(self.words)}


def test_the_key_is_the_frozen_weights_and_the_preprocessing():
    tok = Tokenizer(["[PAD]", "left", "right"])
    two_tower, cfg = frozen_tiny("two_tower")
    fusion, fcfg = frozen_tiny("fusion", seed=1)
    assert store_key(two_tower, cfg.model, tok, SPLIT, None) != store_key(
        fusion, fcfg.model, tok, SPLIT, None)  # other weights: another store
    # the fusion model initialised from the two-tower model's towers: the same store
    fusion.image_encoder.load_state_dict(two_tower.image_encoder.state_dict())
    fusion.text_encoder.load_state_dict(two_tower.text_encoder.state_dict())
    key = store_key(two_tower, cfg.model, tok, SPLIT, None)
    assert store_key(fusion, fcfg.model, tok, SPLIT, None) == key
    # what the frozen layers read changes the key: the split, the image size, the vocabulary
    assert store_key(two_tower, cfg.model, tok, {**SPLIT, "split": "test"}, None) != key
    cfg.model.image.image_size += 32
    assert store_key(two_tower, cfg.model, tok, SPLIT, None) != key
    cfg.model.image.image_size -= 32
    assert store_key(two_tower, cfg.model, Tokenizer(["[PAD]", "left"]), SPLIT, None) != key
    # and the precision they ran in (bf16 outputs are not fp32's)
    assert store_key(two_tower, cfg.model, tok, SPLIT, None, "bf16") != key
    assert store_key(two_tower, cfg.model, tok, SPLIT, None, "fp32") == key
    # a BatchNorm statistic of a frozen stage is part of what they compute with
    with torch.no_grad():
        next(b for n, b in two_tower.image_encoder.named_buffers() if "running_mean" in n).add_(1)
    assert store_key(two_tower, cfg.model, tok, SPLIT, None) != key
    unfrozen, ucfg = frozen_tiny("two_tower")
    ucfg.model.image.freeze_stages = ucfg.model.text.freeze_layers = 0
    assert frozen_identity(build_model(ucfg.model)) is None  # nothing frozen: no store


def test_a_fast_tokenizer_keys_the_same_before_and_after_its_first_call(tiny_tokenizer):
    """Its serialisation carries the last call's truncation and padding: the key must not, or
    the store written before a call is missed after it (the towers encode again)."""
    from core.frozen_store import tokenizer_identity

    tok = copy.deepcopy(tiny_tokenizer)
    before = tokenizer_identity(tok)
    tok(["left lower lobe opacity"], padding="max_length", truncation=True, max_length=16)
    assert tokenizer_identity(tok) == before
    tok.add_tokens(["pneumothorax"])  # the definition changed: another key
    assert tokenizer_identity(tok) != before


def test_workers_read_equal_disjoint_shards_and_validation_reads_every_row(tmp_path):
    store, complete = FrozenStore.open(str(tmp_path), {"k": 1})
    assert not complete
    rows = 10
    for b, (a, z) in enumerate(((0, 4), (4, 8), (8, 10))):
        n = z - a
        store.write_block(b, {"image_prefix": np.arange(a, z, dtype=np.float16)[:, None],
                              "input_ids": np.ones((n, 3), np.int64),
                              "attention_mask": np.ones((n, 3), np.int64),
                              "group": np.arange(a, z), "skip": np.zeros(n, np.int8),
                              "image_id": [f"id{i}" for i in range(a, z)],
                              "caption": ["c"] * n, "cui": [["C1"]] * n})
    store.finish(3, rows, {}, 1.0)
    assert FrozenStore.find(str(tmp_path), {"k": 1}) is not None
    split = StoredSplit(store.root)
    shards = [np.concatenate([b["group"] for b in split.batches(2, rank, 3, seed=5)])
              for rank in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]  # equal: the remainder row dropped
    assert len(set(np.concatenate(shards))) == 9  # disjoint
    again = np.concatenate([b["group"] for b in split.batches(2, 1, 3, seed=5)])
    assert (again == shards[1]).all()  # the same epoch seed, the same shard
    validation = [np.concatenate([b["group"] for b in split.batches(4, r, 2)]) for r in range(2)]
    assert sorted(np.concatenate(validation).tolist()) == list(range(rows))
    assert StoredSplit(store.root, limit=6).rows == 6
