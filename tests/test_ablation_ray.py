"""`rocoray ablation`: two-tower variants (alignment x MCR mode) trained with Ray Train and
scored by the scoring job; a table the evaluate report can include."""

from __future__ import annotations

import json

import pytest


def reference_metrics(run: str, data) -> dict:
    from core.batch import collate
    from core.checkpoint import load_checkpoint, resolve_checkpoint
    from core.data.preprocess import build_preprocessor
    from core.data.rocov2 import read_split
    from core.evaluation.reference import encode_batches, score_matrix
    from core.metrics import evaluate_scores

    loaded = load_checkpoint(resolve_checkpoint(run))  # the run's best checkpoint, as scored
    batch = collate(build_preprocessor(loaded.config.model, loaded.tokenizer)(
        read_split(data, "test")))
    enc = encode_batches(loaded.model, [batch])
    return evaluate_scores(score_matrix(loaded.model, enc["text"], enc["image"]), enc["group"],
                           enc["group"])


@pytest.mark.timeout(600)
def test_ablation_trains_scores_and_tabulates_each_variant(ray_session, synthetic_dir, tmp_path):
    from core.metrics import flat_metrics
    from ray_jobs.ablation import main

    out = tmp_path / "ablation"
    argv = ["--data", str(synthetic_dir), "--variants", "abm:off", "mba:masked_single",
            "--epochs", "1", "--out", str(out), "--set", "train.batch_size=32",
            "train.cpus_per_worker=0.5"]
    result = main(argv)
    names = [v["name"] for v in result["variants"]]
    assert names == ["AbM / MCR off", "MbA / MCR masked_single"]
    for v in result["variants"]:
        # the row is the trained checkpoint's own retrieval: recomputed here in one process
        # from the full score matrix, the same numbers
        assert flat_metrics(v["metrics"]) == pytest.approx(
            flat_metrics(reference_metrics(v["run"], synthetic_dir)))
        assert v["s_per_step"] > 0
        assert len(v["caption_quality"]["i2t"]["BLEU-4"]) == 10
        assert v["modality_gap"]["n"] == 64  # every test pair's two embeddings, none dropped
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["variants"][1]["mcr"] == "masked_single"
    history = json.loads((out / "train" / saved["variants"][1]["run"].split("/")[-1]
                          / "result.json").read_text())["history"]
    assert history[-1]["train/image_recon_loss"] > 0 and history[-1]["train/text_recon_loss"] > 0
    assert "| MbA / MCR masked_single |" in (out / "ablation.md").read_text()
    assert (out / "figures" / "modality_gap.png").stat().st_size > 10_000
    with pytest.raises(SystemExit) as exc:  # an existing ablation is never replaced silently
        main(argv)
    assert exc.value.code == 2


def test_variants_are_checked_before_anything_runs(tmp_path, capsys):
    from ray_jobs.ablation import main

    with pytest.raises(SystemExit) as exc:
        main(["--variants", "abm:sometimes", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "ALIGN:MODE" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
