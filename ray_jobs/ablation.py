"""Ablation of the two-tower model: alignment (AbM / MbA) x masked contrastive reconstruction
(off / masked_single / dual_stream). Each variant is trained with Ray Train and scored on the
test split by the scoring job; the table holds Recall@K, the report quality of retrieved
captions (BLEU-4 / CIDEr @K), the modality gap and the seconds per training step.

    rocoray ablation --data data/synthetic --out runs/ablation
    rocoray evaluate ... --ablation runs/ablation     # the report shows the table

Writes ablation.json, ablation.md and figures/modality_gap.png to --out.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.provenance import provenance
from core import storage
from core.evaluation.caption_quality import caption_quality
from core.config import ExperimentConfig, load_config
from core.models.kind import ModelKind
from core.scoring.settings import Method
from core.data.rocov2 import resolve_split
from core.scoring import outputs
from ray_jobs import score, train
from ray_jobs.options import UserError, opt, parse, run_cli
from ray_jobs.runtime import init_ray, machine, setup_logging

log = logging.getLogger("rocoray.ablation")

RESULT = "ablation.json"
NOTE = ("Each variant: the two-tower model trained with the same preset, data and epochs, "
        "scored on the test split. BLEU-4 / CIDEr @K: the top-K retrieved captions against the "
        "query image's caption (image -> text). Centroid distance / probe accuracy: the "
        "modality gap of the test embeddings. ms/step: training epoch seconds / optimizer steps on "
        "this machine (data loading included; bench/mcr_efficiency.py times the step alone). "
        "Single training runs: differences within a few points of recall are noise.")


@dataclass
class AblationConfig:
    data: str = opt("data/synthetic", "ROCOv2 data (the demo's synthetic set by default)")
    variants: list = opt(["abm:off", "mba:off", "mba:masked_single", "mba:dual_stream"],
                         "alignment:mcr-mode pairs to train", metavar="ALIGN:MODE")
    config: str = opt("tiny", "preset (tiny, base) or YAML file")
    epochs: int | None = opt(None, "override train.epochs")
    set: list = opt([], "config overrides for every variant", metavar="KEY=VALUE")
    experiment: ExperimentConfig | None = opt(None, "a job that calls this one (the demo) hands its "
                                              "experiment config over whole, in place of "
                                              "--config / --set", cli=False)
    split: str = opt("test", "split the variants are scored on")
    out: str = opt("runs/ablation", "output directory")
    overwrite: bool = opt(False, "replace an existing ablation in --out")
    address: str | None = opt(None, "Ray cluster address (default: RAY_ADDRESS, else a local Ray)")


def parse_variants(items: list) -> list[tuple[str, str]]:
    out = []
    for item in items:
        align, _, mode = str(item).partition(":")
        if align not in ("abm", "mba") or mode not in ("off", "masked_single", "dual_stream"):
            raise UserError(f"--variants {item!r}: expected ALIGN:MODE with ALIGN abm or mba and "
                            "MODE off, masked_single or dual_stream")
        out.append((align, mode))
    return out


def step_seconds(history: list) -> float:
    """Mean seconds per optimizer step over the run's epochs."""
    epochs = [h for h in history if h.get("train/epoch_s")]
    steps = (epochs[-1]["step"] / len(epochs)) if epochs else 1
    return float(np.mean([h["train/epoch_s"] for h in epochs]) / max(steps, 1)) if epochs else 0.0


def run(cfg: AblationConfig) -> dict:
    from core.evaluation.modality_gap import gap_figure, modality_gap
    from core.analyses.scored import load_features

    variants = parse_variants(cfg.variants)
    for split in ("train", "validation", cfg.split):
        resolve_split(cfg.data, split)  # a wrong path or split fails before anything is written
    out = Path(storage.absolute(cfg.out))
    if (out / RESULT).exists() and not cfg.overwrite:
        raise UserError(f"{out} already holds an ablation; pass --overwrite to replace it or "
                        "choose another --out")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    experiments = []
    for align, mode in variants:
        exp = (copy.deepcopy(cfg.experiment) if cfg.experiment is not None
               else load_config(cfg.config, cfg.set))  # the user's --set, checked at load
        exp.model.kind, exp.data.path = ModelKind.TWO_TOWER, cfg.data
        exp.model.two_tower.alignment, exp.model.mcr.mode = align, mode  # parse_variants checked
        exp.train.storage_path, exp.train.name = str(out / "train"), f"{align}-{mode}-{stamp}"
        if cfg.epochs is not None:
            exp.train.epochs = cfg.epochs
        experiments.append((align, mode, exp))
    init_ray(cfg.address)
    rows, gaps = [], {}
    for align, mode, experiment in experiments:
        name = f"{align.replace('abm', 'AbM').replace('mba', 'MbA')} / MCR {mode}"
        log.info("ablation variant %s: training", name)
        summary = train.run(experiment)
        score_out = str(out / "score" / f"{align}-{mode}")
        scored = score.run(score.ScoreConfig(model=Method.TWO_TOWER, checkpoint=summary["path"],
                                             data=cfg.data, split=cfg.split, out=score_out))
        text, image = load_features(scored, ModelKind.TWO_TOWER)
        gap = modality_gap(image.embed.numpy(), text.embed.numpy())
        gaps[name] = gap
        captions = outputs.read_gallery(score_out).column("caption").to_pylist()
        cq = caption_quality(captions, {"v": {d: outputs.read_topk(score_out, d)[0]
                                              for d in ("t2i", "i2t")}})
        rows.append({"name": name, "alignment": align, "mcr": mode, "run": summary["path"],
                     "metrics": scored["metrics"], "caption_quality": cq["curves"]["v"],
                     "modality_gap": {k: v for k, v in gap.items() if k not in ("pca", "tsne")},
                     "s_per_step": step_seconds(summary["history"]),
                     "epochs": experiment.train.epochs})
        log.info("ablation variant %s: t2i R@10 %.3f, i2t R@10 %.3f, centroid distance %.3f",
                 name, scored["metrics"]["t2i"]["R@10"], scored["metrics"]["i2t"]["R@10"],
                 gap["centroid_distance"])
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    result = {"data": cfg.data, "split": cfg.split, "config": cfg.config, "k": 10,
              "variants": rows, "note": NOTE, "machine": machine(),
              "figure": str(gap_figure(gaps, figures / "modality_gap.png")),
              "provenance": provenance(cfg.data)}
    storage.write_json(str(out), RESULT, result)
    from core.report.tables import ablation_rows
    from core.report import markdown_table

    storage.write_text(str(out), "ablation.md", "# rocoray two-tower ablation\n\n"
                       + markdown_table(*ablation_rows(result)) + "\n\n" + NOTE
                       + "\n\n![modality gap](figures/modality_gap.png)\n")
    return result


def main(argv=None) -> dict:
    cfg = parse(AblationConfig, argv, "rocoray ablation", __doc__)
    setup_logging()
    result = run_cli("rocoray ablation", lambda: run(cfg))
    from core.report.tables import ablation_rows
    from core.report import markdown_table

    print("\n" + markdown_table(*ablation_rows(result)))
    print(f"\nablation: {Path(storage.absolute(cfg.out)) / 'ablation.md'}")
    return result


if __name__ == "__main__":
    main()
