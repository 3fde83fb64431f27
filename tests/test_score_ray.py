"""The scoring job on Ray Data: equal to a single-process full-matrix reference, restartable
with identical output, the two-tower and rerank paths, and clear errors for bad requests."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from core.batch import collate
from core.data.preprocess import build_preprocessor
from core.data.rocov2 import read_split
from core.evaluation.reference import encode_batches, score_matrix
from core.metrics import evaluate_scores, ranks_from_scores
from tests.helpers import with_scoring

N_TEST = 64


def reference(checkpoint, synthetic_dir):
    from core.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    batch = collate(build_preprocessor(loaded.config.model, loaded.tokenizer)(
        read_split(synthetic_dir, "test")))
    enc = encode_batches(loaded.model, [batch])
    return enc, score_matrix(loaded.model, enc["text"], enc["image"])


def run_score(**kwargs):
    from ray_jobs.score import ScoreConfig, run

    return run(ScoreConfig(**with_scoring(**{k: (str(v) if hasattr(v, "parts") else v)
                                            for k, v in kwargs.items()})))


@pytest.fixture(scope="module")
def fusion_run(checkpoints, synthetic_dir, tmp_path_factory):
    from ray_jobs.runtime import init_ray

    init_ray(num_cpus=2, progress_bars=False)
    out = tmp_path_factory.mktemp("fusion-score")
    summary = run_score(model="fusion", checkpoint=checkpoints["fusion"], data=synthetic_dir,
                        out=out, block=16, k=10)
    return out, summary


@pytest.mark.timeout(300)
def test_distributed_fusion_scoring_equals_full_matrix(ray_session, fusion_run, checkpoints,
                                                       synthetic_dir):
    out, summary = fusion_run
    enc, full = reference(checkpoints["fusion"], synthetic_dir)
    t2i = pq.read_table(out / "t2i.parquet")
    assert t2i.column("query_id").to_pylist() == enc["image_id"]  # same gallery, same order
    top_index = np.asarray(t2i.column("topk_index").to_pylist())
    top_scores = np.asarray(t2i.column("topk_scores").to_pylist())
    ref_scores = np.take_along_axis(full, top_index, axis=1)
    assert np.abs(top_scores - ref_scores).max() <= 1e-4
    assert np.abs(np.sort(full, axis=1)[:, ::-1][:, :10] - top_scores).max() <= 1e-4
    ref = evaluate_scores(full, enc["group"], enc["group"])
    assert summary["metrics"] == ref  # identical Recall@K, MRR, median rank
    assert t2i.column("rank").to_pylist() == ranks_from_scores(full, enc["group"], enc["group"]).tolist()
    assert summary["timings"]["done"] == 16 and summary["skipped"] == {}


@pytest.mark.timeout(400)
def test_restart_skips_finished_tiles_and_output_is_identical(ray_session, fusion_run, checkpoints,
                                                              synthetic_dir, tmp_path, monkeypatch):
    import ray

    from ray_jobs.runtime import init_ray

    clean_out, _ = fusion_run
    args = dict(model="fusion", checkpoint=checkpoints["fusion"], data=synthetic_dir,
                out=tmp_path, block=16, k=10, actors=1)
    # the actor dies at its 7th work item (4 positive tiles + 2 tiles done): a fresh Ray
    # carries the test-only fault switch to its workers
    monkeypatch.setenv("ROCORAY_FAULTS", f"score.item=7@{tmp_path / 'markers'}")
    ray.shutdown()
    init_ray(num_cpus=2, progress_bars=False)
    try:
        with pytest.raises(Exception, match="injected fault at score.item"):
            run_score(**args)
        summary = run_score(**args)
    finally:
        ray.shutdown()
    assert (tmp_path / "markers" / "fault-score.item").exists()  # it did crash
    assert summary["timings"]["cached"] >= 1  # finished tiles were not scored again
    assert summary["timings"]["done"] + summary["timings"]["cached"] == 16
    for name in ("t2i.parquet", "i2t.parquet"):
        assert pq.read_table(tmp_path / name).equals(pq.read_table(clean_out / name))


@pytest.mark.timeout(400)
def test_two_tower_and_rerank(ray_session, fusion_run, checkpoints, synthetic_dir, tmp_path):
    tt = run_score(model="two_tower", checkpoint=checkpoints["two_tower"], data=synthetic_dir,
                   out=tmp_path / "tt", k=10)
    enc, full = reference(checkpoints["two_tower"], synthetic_dir)
    assert tt["metrics"] == evaluate_scores(full, enc["group"], enc["group"])
    rr = run_score(model="rerank", checkpoint=checkpoints["fusion"],
                   retriever=checkpoints["two_tower"], data=synthetic_dir, out=tmp_path / "rr",
                   k=5, rerank_k=16, block=16)
    table = pq.read_table(tmp_path / "rr" / "t2i.parquet")
    assert set(table.column_names) >= {"query_id", "topk_ids", "topk_scores", "rank"}
    first = pq.read_table(tmp_path / "rr" / "first_stage" / "t2i.parquet")
    candidates = np.asarray(first.column("topk_index").to_pylist())
    reranked = np.asarray(table.column("topk_index").to_pylist())
    assert all(set(r) <= set(c) for r, c in zip(reranked, candidates))  # only candidates move
    first_rank = np.asarray(first.column("rank").to_pylist())
    rank = np.asarray(table.column("rank").to_pylist())
    missed = first_rank >= 16
    assert (rank[missed] == first_rank[missed]).all() and (rank[~missed] < 16).all()
    # the fusion scores of the re-ranked lists are the fusion model's own scores
    fenc, ffull = reference(checkpoints["fusion"], synthetic_dir)
    scores = np.asarray(table.column("topk_scores").to_pylist())
    assert np.abs(np.take_along_axis(ffull, reranked, 1) - scores).max() <= 1e-4
    assert rr["timings"]["pairs"] == 2 * N_TEST * 16


@pytest.mark.timeout(300)
def test_bad_requests_fail_clearly(ray_session, checkpoints, synthetic_dir, tmp_path):
    with pytest.raises(ValueError, match="needs a fusion checkpoint"):
        run_score(model="fusion", checkpoint=checkpoints["two_tower"], out=tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_score(model="fusion", checkpoint=tmp_path / "nope", out=tmp_path / "b")
    with pytest.raises(ValueError, match="holds only 8"):
        run_score(model="two_tower", checkpoint=checkpoints["two_tower"], data=synthetic_dir,
                  max_items=8, k=10, out=tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()  # nothing written


@pytest.mark.timeout(300)
def test_empty_gallery_is_a_clear_error(ray_session, checkpoints, tmp_path):
    from helpers import rocov2_table, truncated_jpeg, write_parquet

    write_parquet(rocov2_table([{"image": truncated_jpeg(), "image_id": f"x{i}", "caption": "c"}
                                for i in range(4)]), tmp_path / "test-00000-of-00001.parquet")
    with pytest.raises(ValueError, match="gallery is empty.*image_undecodable.: 4"):
        run_score(model="two_tower", checkpoint=checkpoints["two_tower"], data=tmp_path, k=2,
                  out=tmp_path / "out")
