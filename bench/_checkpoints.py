"""Which trained checkpoint a benchmark measured, written into its results file: a run
directory such as ``runs/bench-roco_sample`` is replaced each time its demo is rerun, so its
path alone does not say which model a number came from.

    checkpoint_record("runs/bench-roco_sample/train/fusion")
    -> {"path": "runs/bench-roco_sample/train/fusion/checkpoint_epoch_0012",
        "model": {"image": "efficientnet_lite0 224 px", "fusion_width": 128, ...},
        "kind": "fusion", "weights": {"size": ..., "blake2b": "..."}, "config": {...}}

The identity is ``core.checkpoint.checkpoint_identity``: the same digest of the same weights
file that keys the cached work built from a checkpoint.
"""

from __future__ import annotations

from pathlib import Path


def checkpoint_record(path: str | Path) -> dict:
    """The checkpoint that ``path`` (a checkpoint, or a training run: its best, else its
    latest) resolves to: its path (its epoch), the settings that say which model it is
    (towers, widths) and its identity (kind, and the digests of its weights and config)."""
    from core.checkpoint import checkpoint_identity, read_checkpoint_config, resolve_checkpoint
    from core.provenance import portable_path

    resolved = Path(resolve_checkpoint(path))
    model = read_checkpoint_config(resolved).model
    text = model.text
    described = {"image": f"{model.image.arch} {model.image.image_size} px",
                 "text": text.name_or_path or f"BERT {text.num_layers} layers x "
                                              f"{text.hidden_size}, randomly initialised"}
    if model.kind == "fusion":
        described.update(fusion_width=model.fusion.width,
                         negatives_per_positive=model.fusion.negatives_per_positive,
                         negative_mode=model.fusion.negative_mode)
    else:
        described.update(embed_dim=model.two_tower.embed_dim)
    return {"path": portable_path(resolved), "model": described, **checkpoint_identity(resolved)}


def short(record: dict) -> str:
    """A checkpoint record in a few words, for a README row: its kind, epoch, width and the
    start of its weights' digest (a record written before ``checkpoint_identity`` was used
    holds its digest as ``weights_blake2b``)."""
    model = record["model"]
    digest = record["weights"]["blake2b"] if "weights" in record else record["weights_blake2b"]
    width = (f"width {model['fusion_width']}" if "fusion_width" in model
             else f"embedding {model.get('embed_dim')}")
    return (f"{record['kind']} {Path(record['path']).name.replace('checkpoint_', '')}, "
            f"{width}, weights {digest[:8]}")
