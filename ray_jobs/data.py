"""Ray Data pipelines over the ROCOv2 layout: read Parquet shards and preprocess them with
core's ``Preprocessor`` (one stage), gather statistics, and hand batches to the training
loop across the host/device boundary (``HostCollate``). The reader and the preprocessing are core's; this
module only places them on Ray."""

from __future__ import annotations

import numpy as np
import ray
import ray.data
from ray.data.collate_fn import NumpyBatchCollateFn

from core.batch import collate
from core.data.preprocess import Preprocessor
from core.data.rocov2 import SplitFiles, columns_to_read, resolve_split, row_groups
from core.data.stats import summarize_split


def _read_units(batch: dict, filesystem, columns: list[str], preprocessor=None,
                batch_size: int = 64, keep: list[str] | None = None):
    """One task: read the batch's row groups and, given a preprocessor, preprocess them in
    sub-batches. Reading and preprocessing in ONE task avoids a hop of the raw rows through
    the object store (and an operator boundary Ray Data cannot fuse)."""
    import pyarrow as pa

    from core.data.rocov2 import read_row_group

    table = pa.concat_tables([read_row_group(filesystem, p, int(g), columns)
                              for p, g in zip(batch["path"], batch["row_group"])])
    if preprocessor is None:
        return table
    parts = [preprocessor(table.slice(s, batch_size)) for s in range(0, table.num_rows, batch_size)]
    names = keep or list(parts[0])
    return {k: np.concatenate([part[k] for part in parts]) for k in names}


def read_split_dataset(path, split: str, storage_options: dict | None = None,
                       max_rows: int | None = None, columns: list[str] | None = None,
                       num_cpus: float = 0.25, preprocessor: Preprocessor | None = None,
                       batch_size: int = 64, keep: list[str] | None = None,
                       shuffle_seed: int | None = None) -> tuple[ray.data.Dataset, SplitFiles]:
    """Stream one split's shards, one Parquet row group per task, preprocessed in that same
    task when a ``preprocessor`` is given (only the ``keep`` columns leave it). The path and
    every shard's columns are checked first, so a bad path or a missing column fails here,
    naming it, and not inside a Ray task. ``shuffle_seed``: the row groups' order is
    shuffled every epoch (rows inside them by the trainer's local shuffle buffer).

    Tasks take ``num_cpus`` (fractional: on small machines Ray Data's own file listing task
    takes a whole CPU and can deadlock against actor pools that hold the rest)."""
    files = resolve_split(path, split, storage_options)
    units = row_groups(files, max_rows)
    if not units:
        raise ValueError(f"split {split!r} of {path} has no rows")
    ds = ray.data.from_items([{"path": p, "row_group": g} for p, g, _ in units],
                             override_num_blocks=len(units))
    if shuffle_seed is not None:
        ds = ds.randomize_block_order(seed=shuffle_seed)
    ds = ds.map_batches(_read_units, fn_kwargs={
        "filesystem": files.filesystem, "columns": columns or columns_to_read(files),
        "preprocessor": preprocessor, "batch_size": batch_size, "keep": keep},
        batch_size=1, batch_format="numpy", num_cpus=num_cpus)
    if max_rows is not None:
        ds = ds.limit(max_rows)
    return ds, files


def split_rows(files: SplitFiles, max_rows: int | None = None) -> int:
    """Rows of a split from the Parquet footers (no decoding)."""
    rows = sum(n for _, _, n in row_groups(files, max_rows))
    return rows if max_rows is None else min(rows, max_rows)


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


class HostCollate(NumpyBatchCollateFn):
    """``iter_torch_batches(collate_fn=HostCollate())``: core's host/device boundary
    (``core.batch.collate``) run in Ray's prefetch threads. It returns a ``Batch``, not a dict
    of tensors, so Ray moves nothing to the device: the loop moves the model inputs only."""

    def __init__(self, pin_memory: bool = False):
        self.pin_memory = pin_memory

    def __call__(self, batch: dict):
        return collate(batch, self.pin_memory)
