"""Preprocessing: bad rows keep their place, are marked with a reason, and are counted."""

from __future__ import annotations

import numpy as np
from helpers import bad_rows, rocov2_table

from core.config import load_config
from core.batch import collate
from core.data.preprocess import (Preprocessor, SkipReason, build_preprocessor, count_skips,
                                  group_key)


def test_bad_rows_are_marked_and_counted(tiny_tokenizer):
    rows = bad_rows()
    pre = Preprocessor(tiny_tokenizer, image_size=32, max_length=16)
    out = pre(rocov2_table(rows))
    assert len(out["skip"]) == len(rows)  # nothing vanishes
    for row, code in zip(rows, out["skip"]):
        assert SkipReason(int(code)).label == row.get("expect", "ok"), row["image_id"]
    expected = {}
    for r in rows:
        if "expect" in r:
            expected[r["expect"]] = expected.get(r["expect"], 0) + 1
    assert count_skips(out["skip"]) == expected
    kept = collate(out)
    assert list(kept.image_id) == ["good-1", "good-2"]
    assert kept.skipped == expected
    assert kept.inputs["pixel_values"].shape == (2, 3, 32, 32)
    assert kept.inputs["pixel_values"].float().abs().sum() > 0
    assert (out["input_ids"][out["skip"] != 0] == 0).all()


def test_numpy_batch_format_matches_arrow(tiny_tokenizer):
    table = rocov2_table(bad_rows())
    pre = Preprocessor(tiny_tokenizer, 32, 16)
    a = pre(table)
    batch = {name: np.asarray(table.column(name).to_pylist(), dtype=object)
             for name in table.column_names}
    b = pre(batch)
    np.testing.assert_array_equal(a["skip"], b["skip"])
    np.testing.assert_allclose(a["pixel_values"], b["pixel_values"])


def test_groups_join_identical_captions():
    assert group_key("Chest X-ray,  left nodule.") == group_key("chest x-ray, left nodule.")
    assert group_key("left nodule") != group_key("right nodule")


def test_caption_group_column_wins(tiny_tokenizer):
    table = rocov2_table(bad_rows()[:1] * 2)
    import pyarrow as pa
    table = table.append_column("caption_group", pa.array(["g1", "g2"]))
    out = Preprocessor(tiny_tokenizer, 32, 16)(table)
    assert out["group"][0] != out["group"][1]  # same caption, different declared groups


def test_synthetic_rows_all_pass(synthetic_dir, tiny_tokenizer):
    from core.data.rocov2 import read_split

    pre = build_preprocessor(load_config("tiny").model, tiny_tokenizer)
    out = pre(read_split(synthetic_dir, "test"))
    assert (out["skip"] == 0).all()
    assert out["pixel_values"].shape == (64, 3, 64, 64)
    assert (out["input_ids"] == tiny_tokenizer.unk_token_id).sum() == 0
