"""Real radiology through Ray Train: the embedded CC BY ROCO figures (datasets/roco-ccby,
shipped with the project, so this runs on CI without ../shared), pretrained towers that pip
brings, a short fine-tune on a slice. Validation recall must clear twice the group-aware
chance level: random-init towers stay near chance on real figures (checked by hand: see
the closing note of issue 19), pretrained ones do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.evaluation.comparison import chance_level, positives_per_query
from core.data.preprocess import clean_caption, group_key
from core.data.rocov2 import read_split

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROCO_CCBY = Path(__file__).resolve().parents[1] / "datasets" / "roco-ccby"
SLICE = ["data.max_rows=320", "model.image.image_size=160", "train.batch_size=32",
         "train.eval_batch_size=64", "train.cpus_per_worker=1.0", "model.concepts.weight=0",
         # the fine-tuning path: blocks 5-6 train on the frozen stages' outputs
         "model.image.freeze_stages=7"]


@pytest.mark.timeout(600)
def test_pretrained_fine_tune_on_real_roco_beats_chance(ray_session, tmp_path):
    from ray_jobs.options import parse
    from ray_jobs.train import TrainArgs, run

    args = parse(TrainArgs, ["--model", "two_tower", "--config", "roco_cpu", "--data",
                             str(ROCO_CCBY), "--storage-path", str(tmp_path), "--name", "real",
                             "--epochs", "2", "--set", *SLICE], "rocoray train", None)
    final = run(args.experiment(), args.address)["final"]
    captions = read_split(ROCO_CCBY, "validation", columns=["caption"]).column("caption").to_pylist()
    groups = np.array([group_key(clean_caption(c)[0]) for c in captions])
    assert final["val/gallery_size"] == len(groups) == 230
    chance = chance_level("R@10", len(groups), positives_per_query(groups))
    assert 0.04 < chance < 0.05
    for direction in ("t2i", "i2t"):
        assert final[f"val/{direction}/R@10"] > 2 * chance, (direction, final, chance)
    assert final["train/skipped_rows"] == 0
