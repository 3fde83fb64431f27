"""The Ray Data pipeline and the prepare job, on Ray, under timeouts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import bad_rows, rocov2_table, write_parquet

from core.config import load_config
from core.data.preprocess import build_preprocessor, count_skips


@pytest.mark.timeout(180)
def test_ray_data_pipeline_counts_bad_rows(ray_session, synthetic_dir, tiny_tokenizer, tmp_path):
    from ray_jobs.data import read_split_dataset

    for p in synthetic_dir.glob("validation-*.parquet"):
        shutil.copy(p, tmp_path / p.name)
    write_parquet(rocov2_table(bad_rows()), tmp_path / "validation-99999-of-99999.parquet")
    pre = build_preprocessor(load_config("tiny").model, tiny_tokenizer)
    out, files = read_split_dataset(tmp_path, "validation", num_cpus=0.5, preprocessor=pre,
                                    batch_size=16)
    assert len(files.paths) == 2
    skips, ids, shapes = [], [], set()
    for batch in out.iter_batches(batch_format="numpy", batch_size=32):
        skips.append(batch["skip"])
        ids.extend(batch["image_id"])
        shapes.add(batch["pixel_values"].shape[1:])
        assert batch["pixel_values"].dtype == np.uint8  # 4x fewer bytes to the device
    skip = np.concatenate(skips)
    assert len(ids) == 64 + len(bad_rows())
    assert shapes == {(3, 64, 64)}
    assert count_skips(skip) == {"image_missing": 1, "image_undecodable": 3,
                                 "caption_missing": 1, "caption_empty": 2}


@pytest.mark.timeout(240)
def test_prepare_job_synthetic(ray_session, tmp_path):
    from ray_jobs.prepare import main

    out = tmp_path / "synth"
    result = main(["--synthetic", "--out", str(out), "--n-train", "60", "--n-val", "20",
                   "--n-test", "20", "--image-size", "64", "--rows-per-shard", "32"])
    stats = {s["split"]: s for s in result["splits"]}
    assert stats["train"]["rows"] == 60 and stats["train"]["files"] == 2
    assert stats["test"]["kept"] == 20 and stats["test"]["skipped"] == {}
    assert set(stats["train"]["attributes"]["modality"]) <= {"xray", "ct", "mri", "ultrasound"}
    assert (out / "tokenizer" / "tokenizer.json").exists()
    assert json.loads((out / "stats.json").read_text())["splits"][0]["split"] == "train"


@pytest.mark.timeout(240)
def test_prepare_job_real_sample(ray_session, real_sample, tmp_path):
    from ray_jobs.prepare import main

    result = main(["--data", str(real_sample), "--out", str(tmp_path / "xray")])
    stats = {s["split"]: s for s in result["splits"]}
    assert stats["train"]["rows"] == 244 and stats["train"]["kept"] == 244
    assert stats["train"]["unique_captions"] == 182
    assert stats["train"]["caption_words"]["mean"] > 40  # the sample's long case notes


@pytest.mark.timeout(60)
def test_prepare_wrong_path_is_a_clear_error(ray_session, tmp_path):
    from ray_jobs.prepare import PrepareConfig, run

    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(PrepareConfig(data=str(tmp_path / "missing"), out=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()
