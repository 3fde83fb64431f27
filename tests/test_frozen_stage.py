"""The frozen towers' encode stage (``ray_jobs.frozen``) on real figures: the splits a job
needs are encoded by ONE Ray Data stage (one actor start-up), and each split's store holds
exactly what encoding it alone would: the same rows in the same order, in blocks of
``STORE_BLOCK``, even where a block of the stage's output mixes two splits; the actor runs its
calls side by side (one per reserved core) and every row still holds what encoding it in this
process gives, in the split's order; a row limit keeps each split's first rows; a second call
reuses every store."""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

pytestmark = [pytest.mark.ray]

ROCO_CCBY = Path(__file__).resolve().parents[1] / "datasets" / "roco-ccby"
ROWS = {"train": 150, "validation": 48}  # 150 = one full block + 22 rows that share a batch


def stored(store) -> dict:
    """Every block of a store, concatenated: {column: array}."""
    blocks = [store.read_block(b) for b in range(store.meta()["blocks"])]
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0] if k != "cui"}


@pytest.mark.timeout(300)
def test_one_stage_encodes_both_splits_as_encoding_each_alone_would(ray_session, tmp_path):
    from core.config import load_config
    from core.data.preprocess import build_preprocessor
    from core.data.rocov2 import resolve_split
    from core.data.tokenizer import resolve_tokenizer
    from core.models import build_model
    from core.training.frozen_features import encode_frozen
    from ray_jobs.frozen import STORE_BLOCK, ensure_store, ensure_stores, stage_streams

    data = tmp_path / "roco"
    data.mkdir()
    for split, n in ROWS.items():
        table = pq.read_table(ROCO_CCBY / f"{split}-00000-of-00001.parquet").slice(0, n)
        pq.write_table(table, data / f"{split}-00000-of-00001.parquet", row_group_size=32)
    config = load_config("roco_cpu")
    tokenizer, _ = resolve_tokenizer(config.model.text, str(data))
    model = build_model(config.model).eval()
    splits = [resolve_split(str(data), s) for s in ROWS]
    # 1.5 CPUs, as training reserves them: an actor taking every CPU can stall Ray Data
    args = dict(build_model=partial(build_model, config.model),
                preprocessor=build_preprocessor(config.model, tokenizer), cpus=1.5,
                precision="fp32")

    both = ensure_stores(str(tmp_path / "one"), model, config.model, tokenizer, splits, None,
                         **args)
    alone = [ensure_store(str(tmp_path / f"alone-{f.split}"), model, config.model, tokenizer, f,
                          None, **args) for f in splits]
    for (store, meta), (store1, meta1), rows in zip(both, alone, ROWS.values()):
        assert meta["rows"] == meta1["rows"] == rows and not meta["reused"]
        assert meta["stage"]["splits"] == list(ROWS) and meta1["stage"]["splits"] == [meta1[
            "stage"]["splits"][0]]
        assert meta["blocks"] == -(-rows // STORE_BLOCK)
        got, want = stored(store), stored(store1)
        assert list(got["image_id"]) == list(want["image_id"])
        for k in ("image_prefix", "input_ids", "attention_mask", "group", "skip"):
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert both[0][1]["encode_s"] > 0 and both[1][1]["encode_s"] > 0

    # two calls at once on 1.5 CPUs (stage_streams), yet each row is its own, in order
    assert stage_streams(1.5) == (2, 1)
    table = pq.read_table(data / "train-00000-of-00001.parquet")
    got = stored(both[0][0])
    assert list(got["image_id"]) == table.column("image_id").to_pylist()
    # a copy: tokenizing sets the tokenizer's padding state, which the store's key hashes
    pre = build_preprocessor(config.model, copy.deepcopy(tokenizer))
    with torch.no_grad():
        here = np.concatenate([encode_frozen(model, pre(table.slice(s, 32)))["image_prefix"]
                               for s in range(0, table.num_rows, 32)])
    np.testing.assert_allclose(got["image_prefix"].astype(np.float32),
                               here.astype(np.float32), rtol=1e-2, atol=1e-2)

    # each split's first 40 rows (the limit cuts a row group); then every store reused
    limited = ensure_stores(str(tmp_path / "limited"), model, config.model, tokenizer, splits,
                            40, **args)
    for (store, meta), (whole, _) in zip(limited, alone):
        assert meta["rows"] == 40
        np.testing.assert_array_equal(stored(store)["image_prefix"],
                                      stored(whole)["image_prefix"][:40])
    again = ensure_stores(str(tmp_path / "one"), model, config.model, tokenizer, splits, None,
                          **args)
    assert all(meta["reused"] for _, meta in again)
    assert [s.root for s, _ in again] == [s.root for s, _ in both]
