"""Shared by the variant benches (``roco_variants``, ``fusion_variants``): a split's rows
through a model's frozen layers, encoded here in one process."""

from __future__ import annotations


def encode_split(model, data: str, split: str, tokenizer, concepts, precision: str = "fp32",
                 batch_rows: int = 64, max_rows: int | None = None) -> list:
    """A split's preprocessed rows through ``model``'s frozen layers, here in one process, by
    core's ``encode_frozen`` (exactly what `rocoray train` trains on), as numpy batches of
    ``batch_rows``: the variant benches' inputs."""
    import torch

    from core.data.preprocess import build_preprocessor
    from core.data.rocov2 import read_split
    from core.training.frozen_features import encode_frozen

    model.eval()
    table = read_split(data, split, max_rows=max_rows)
    pre = build_preprocessor(model.config, tokenizer, concepts)
    with torch.no_grad():
        return [encode_frozen(model, pre(table.slice(start, batch_rows)), precision=precision)
                for start in range(0, table.num_rows, batch_rows)]
