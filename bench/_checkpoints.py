"""Which trained checkpoint a benchmark measured, written into its results file: a run
directory such as ``runs/bench-roco_sample`` is replaced each time its demo is rerun, so its
path alone does not say which model a number came from.

    checkpoint_record("runs/bench-roco_sample/train/fusion")
    -> {"path": "runs/bench-roco_sample/train/fusion/checkpoint_epoch_0012", "kind": "fusion",
        "model": {"image": "efficientnet_lite0 224 px", "fusion_width": 128, ...},
        "weights_blake2b": "..."}
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

WEIGHTS = "model.safetensors"


def weights_digest(checkpoint: str | Path) -> str:
    """A BLAKE2 digest of a checkpoint's weights file, all of it (about 0.2 s per 100 MB)."""
    h = hashlib.blake2b(digest_size=12)
    with (Path(checkpoint) / WEIGHTS).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_record(path: str | Path) -> dict:
    """The checkpoint that ``path`` (a checkpoint, or a training run: its best, else its
    latest) resolves to: its path (its epoch), the digest of its weights, and the settings
    that say which model it is (kind, towers, widths)."""
    from core.checkpoint import resolve_checkpoint
    from core.provenance import portable_path

    resolved = Path(resolve_checkpoint(path))
    config = yaml.safe_load((resolved / "config.yaml").read_text())
    model = config["model"]
    kind = model["kind"]
    described = {"image": f"{model['image']['arch']} {model['image']['image_size']} px",
                 "text": model["text"]["name_or_path"]}
    if kind == "fusion":
        fusion = model["fusion"]
        described.update(fusion_width=fusion["width"],
                         negatives_per_positive=fusion["negatives_per_positive"],
                         negative_mode=fusion["negative_mode"])
    else:
        described.update(embed_dim=model["two_tower"]["embed_dim"])
    return {"path": portable_path(resolved), "kind": kind, "model": described,
            "weights_blake2b": weights_digest(resolved)}


def short(record: dict) -> str:
    """A checkpoint record in a few words, for a README row: its kind, epoch, width and the
    start of its weights' digest."""
    model = record["model"]
    width = (f"width {model['fusion_width']}" if "fusion_width" in model
             else f"embedding {model.get('embed_dim')}")
    return (f"{record['kind']} {Path(record['path']).name.replace('checkpoint_', '')}, "
            f"{width}, weights {record['weights_blake2b'][:8]}")
