"""Ray Data pipelines over the ROCOv2 layout: read Parquet shards, preprocess with core's
``Preprocessor``, and gather statistics. The reader and the preprocessing are core's; this
module only places them on Ray."""

from __future__ import annotations

import numpy as np
import ray
import ray.data

from core.data.preprocess import Preprocessor
from core.data.rocov2 import SplitFiles, columns_to_read, resolve_split
from core.data.stats import summarize_split


def read_split_dataset(path, split: str, storage_options: dict | None = None,
                       max_rows: int | None = None,
                       columns: list[str] | None = None) -> tuple[ray.data.Dataset, SplitFiles]:
    """Stream one split's shards. The path and every shard's columns are checked first, so a
    bad path or a missing column fails here, naming it, and not inside a Ray task."""
    files = resolve_split(path, split, storage_options)
    ds = ray.data.read_parquet(list(files.paths), filesystem=files.arrow_filesystem())
    ds = ds.select_columns(columns or columns_to_read(files))
    if max_rows is not None:
        ds = ds.limit(max_rows)
    return ds, files


def preprocess(ds: ray.data.Dataset, preprocessor: Preprocessor, num_cpus: float = 0.5,
               batch_size: int = 64) -> ray.data.Dataset:
    """The preprocessing stage: decode, resize/crop, normalise, tokenize (core.Preprocessor),
    as stateless map tasks with fractional CPUs so reads and consumers keep running."""
    return ds.map_batches(preprocessor, batch_format="pyarrow", batch_size=batch_size,
                          num_cpus=num_cpus)


def _inspect(batch, preprocessor: Preprocessor):
    return preprocessor.inspect(batch)


def split_statistics(ds: ray.data.Dataset, preprocessor: Preprocessor, split: str,
                     num_cpus: float = 0.5, batch_size: int = 64) -> dict:
    """Decode every row once (in parallel) and summarise: rows kept and skipped by reason,
    caption lengths, image sizes."""
    facts = ds.map_batches(_inspect, fn_kwargs={"preprocessor": preprocessor},
                           batch_format="pyarrow", batch_size=batch_size, num_cpus=num_cpus)
    parts: dict[str, list] = {}
    for batch in facts.iter_batches(batch_format="numpy", batch_size=4096):
        for key, value in batch.items():
            parts.setdefault(key, []).append(value)
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    return summarize_split(arrays, split)
