"""What a scoring run leaves behind, and how it is read back (report, rerank, benchmarks):

    gallery.parquet     one row per scored item: image_id, caption, group (its gallery order),
                        and concept_logits (C floats) when the model has a concept head
    t2i.parquet         per caption query: top-K image rows, ids, scores, exact rank
    i2t.parquet         per image query: top-K caption rows, ids, scores, exact rank
    scoring.json        metrics, timings, sizes, skipped rows (strict JSON)
    rerank_candidates.npz   (rerank) each query's first-stage candidates, their two-tower
                        and fusion scores: every (k, alpha) is a re-ordering of them
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from core import storage

GALLERY = "gallery.parquet"
SUMMARY = "scoring.json"
RERANK_CANDIDATES = "rerank_candidates.npz"


def read_summary(root: str) -> dict:
    return storage.read_json(root, SUMMARY)


def write_rescored(root: str, rescored: dict) -> None:
    storage.write_arrays(root, RERANK_CANDIDATES, {f"{d}.{name}": value
                                                   for d, r in rescored.items()
                                                   for name, value in r.items()})


def read_rescored(root: str) -> dict:
    """{direction: {name: array}} as ``write_rescored`` stored it."""
    rescored: dict = {}
    for key, value in storage.read_arrays(root, RERANK_CANDIDATES).items():
        d, name = key.split(".", 1)
        rescored.setdefault(d, {})[name] = value
    return rescored


def topk_name(direction: str) -> str:
    return f"{direction}.parquet"


def write_gallery(root: str, image_ids, captions, groups,
                  concept_logits: np.ndarray | None = None) -> pa.Table:
    columns = {"image_id": list(image_ids), "caption": list(captions),
               "group": np.asarray(groups, np.int64)}
    if concept_logits is not None:
        logits = np.ascontiguousarray(concept_logits, np.float32)
        columns["concept_logits"] = pa.FixedSizeListArray.from_arrays(
            pa.array(logits.ravel()), logits.shape[1])
    table = pa.table(columns)
    storage.write_parquet(root, GALLERY, table)
    return table


def read_gallery(root: str) -> pa.Table:
    return storage.read_parquet(root, GALLERY)


def concept_logits(gallery: pa.Table) -> np.ndarray | None:
    """(N, C) concept logits of a gallery's images, or None (no concept head)."""
    if "concept_logits" not in gallery.column_names:
        return None
    column = gallery.column("concept_logits").combine_chunks()
    return column.values.to_numpy().reshape(len(column), -1)


def write_topk(root: str, direction: str, gallery: pa.Table, index: np.ndarray,
               scores: np.ndarray, ranks: np.ndarray) -> None:
    ids = np.asarray(gallery.column("image_id").to_pylist(), dtype=object)
    table = pa.table({
        "query_index": np.arange(len(ranks)),
        "query_id": ids,
        "topk_index": [row.tolist() for row in np.asarray(index)],
        "topk_ids": [ids[row].tolist() for row in np.asarray(index)],
        "topk_scores": [row.tolist() for row in np.asarray(scores, np.float32)],
        "rank": np.asarray(ranks, np.int64),
    })
    storage.write_parquet(root, topk_name(direction), table)


def read_topk(root: str, direction: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top-K rows (Nq, K), their scores, exact ranks) of a scoring run."""
    table = storage.read_parquet(root, topk_name(direction))
    return (np.asarray(table.column("topk_index").to_pylist(), dtype=np.int64),
            np.asarray(table.column("topk_scores").to_pylist(), dtype=np.float32),
            table.column("rank").to_numpy())
