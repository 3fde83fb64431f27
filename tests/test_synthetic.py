"""The synthetic ROCOv2: deterministic, ROCOv2-shaped, compositional, with hard negatives."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
import pyarrow.parquet as pq

from core.data.images import decode_image
from core.data.rocov2 import ROCOV2_SCHEMA, read_split
from core.synthetic.attributes import CUIS, SIZE_RANGES_MM, Case, flip
from core.synthetic.captions import make_caption
from core.synthetic.generate import SyntheticSpec, plan_split, write_synthetic
from core.synthetic.render import render_image


def _digests(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.glob("*.parquet"))}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    spec = SyntheticSpec(sizes={"train": 40, "validation": 10, "test": 10}, seed=3,
                         image_size=64, rows_per_shard=16)
    write_synthetic(spec, tmp_path / "a")
    write_synthetic(spec, tmp_path / "b")
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    write_synthetic(SyntheticSpec(**{**spec.__dict__, "seed": 4}), tmp_path / "c")
    assert _digests(tmp_path / "a") != _digests(tmp_path / "c")
    # the row plan does not depend on the shard size
    other = SyntheticSpec(**{**spec.__dict__, "rows_per_shard": 7})
    assert plan_split(spec, "train") == plan_split(other, "train")


def test_rocov2_layout(synthetic_dir):
    for path in synthetic_dir.glob("*.parquet"):
        schema = pq.read_schema(path)
        for field in ROCOV2_SCHEMA:
            assert schema.field(field.name).type == field.type
        assert b"huggingface" in schema.metadata
    table = read_split(synthetic_dir, "train")
    ids = table.column("image_id").to_pylist()
    assert len(set(ids)) == len(ids)
    img = decode_image(table.column("image").to_pylist()[0]["bytes"])
    assert img.size == (96, 96)


def test_captions_state_attributes_and_are_rocov2_length(synthetic_dir):
    table = read_split(synthetic_dir, "train").to_pylist()
    words = [len(r["caption"].split()) for r in table]
    assert 16 <= np.mean(words) <= 26
    assert len({r["caption"] for r in table}) == len(table)  # no two alike
    for r in table:
        if r["finding"] == "normal":
            assert len(r["cui"]) == 3
            continue
        assert len(r["cui"]) == 7
        text = r["caption"].lower()
        assert r["laterality"] in text
        side_word = {"upper": ("upper", "superior"), "lower": ("lower", "inferior")}
        assert any(w in text for w in side_word[r["position"]])
        assert CUIS[("laterality", r["laterality"])] in r["cui"]


def test_attribute_coverage_and_hard_negative_families(synthetic_dir):
    rows = read_split(synthetic_dir, "train").to_pylist()
    for column, n in (("modality", 4), ("body_region", 4), ("finding", 6)):
        assert len(Counter(r[column] for r in rows)) == n
    families = {}
    for r in rows:
        families.setdefault(r["family_id"], []).append(r)
    attrs = ("modality", "body_region", "finding", "laterality", "position", "size_mm",
             "lesion_count")
    one_apart, flipped = 0, Counter()
    for members in families.values():
        for a in members:
            diffs = [[k for k in attrs if a[k] != b[k]] for b in members if b is not a]
            # siblings never differ in the body region (the case stays the case) ...
            assert all("body_region" not in d for d in diffs)
            # ... and each has a sibling exactly one attribute away
            if diffs:
                assert any(len(d) == 1 for d in diffs)
                one_apart += 1
                flipped.update(d[0] for d in diffs if len(d) == 1)
    assert one_apart >= len(rows) // 5
    # every attribute has one-attribute siblings
    assert set(flipped) == {"laterality", "position", "modality", "finding", "size_mm",
                            "lesion_count"}
    # the held-out splits never repeat a training case: every abnormal case there has an
    # attribute combination (all categorical attributes) that training never showed
    size_class = lambda mm: next(c for c, (lo, hi) in SIZE_RANGES_MM.items()  # noqa: E731
                                 if lo <= mm <= hi)
    combo = lambda r: (*(r[k] for k in attrs if k != "size_mm"), size_class(r["size_mm"]))  # noqa: E731
    trained = {combo(r) for r in rows if r["finding"] != "normal"}
    for split in ("validation", "test"):
        held_out = [r for r in read_split(synthetic_dir, split).to_pylist()
                    if r["finding"] != "normal"]
        assert held_out and not {combo(r) for r in held_out} & trained, split


def test_laterality_is_drawn_on_the_radiological_side():
    case = Case("xray", "abdomen", "calcification", "left", "upper", "large", 40.0, 1)
    left = render_image(case, np.random.default_rng(5), 128).astype(np.float32)
    right = render_image(flip(case, "laterality"), np.random.default_rng(5), 128).astype(np.float32)
    diff = left - right
    # patient's left is the image's right: the left case is brighter on the image's right half
    assert diff[:, 64:].sum() > 0 > diff[:, :64].sum()
    lower = render_image(flip(case, "position"), np.random.default_rng(5), 128).astype(np.float32)
    d2 = left - lower
    assert d2[:64].sum() > 0 > d2[64:].sum()


def test_captions_vary_for_one_case():
    case = Case("ct", "chest", "nodule", "right", "lower", "small", 8.0, 2)
    texts = {make_caption(np.random.default_rng(i), case) for i in range(30)}
    assert len(texts) > 20
    assert any("cm" in t for t in texts) and any("mm" in t for t in texts)


def test_data_of_an_older_generator_is_refused_never_overwritten(tmp_path):
    import json

    from core.synthetic.generate import (GENERATOR_VERSION, SPEC_FILE, SyntheticSpec,
                                         existing_synthetic, spec_dict)

    spec = SyntheticSpec(sizes={"test": 4}, image_size=32)
    (tmp_path / "test-00000-of-00001.parquet").write_bytes(b"old shard")
    (tmp_path / SPEC_FILE).write_text(json.dumps({**spec_dict(spec), "version": 2}))
    with pytest.raises(FileExistsError, match=f"generator version 2 \\(this is version "
                                              f"{GENERATOR_VERSION}\\)"):
        existing_synthetic(tmp_path, spec)
    assert (tmp_path / "test-00000-of-00001.parquet").read_bytes() == b"old shard"
