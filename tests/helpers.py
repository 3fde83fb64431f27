"""Shared by the tests: crafting bad inputs, free ports, tiny models to explain."""

from __future__ import annotations

import io
import socket

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from core.data.rocov2 import ROCOV2_SCHEMA


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def jpeg_bytes(size=(64, 48), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(arr), "JPEG", quality=90)


def truncated_jpeg() -> bytes:
    data = jpeg_bytes((128, 128))
    return data[: len(data) // 2]


def random_bytes(n=500, seed=1) -> bytes:
    return np.random.default_rng(seed).integers(0, 255, n, dtype=np.uint8).tobytes()


def rocov2_table(rows: list[dict]) -> pa.Table:
    """rows: dicts with image (bytes|None), image_id, caption; cui defaults to []."""
    return pa.table({
        "image": [None if r.get("image") is None else {"bytes": r["image"], "path": None}
                  for r in rows],
        "image_id": [r.get("image_id") for r in rows],
        "caption": [r.get("caption") for r in rows],
        "cui": [r.get("cui", []) for r in rows],
    }, schema=ROCOV2_SCHEMA)


def bad_rows() -> list[dict]:
    """Two good rows and one of every bad kind, with the reason each must be skipped for."""
    return [
        {"image": jpeg_bytes(), "image_id": "good-1", "caption": "Chest X-ray, left nodule."},
        {"image": truncated_jpeg(), "image_id": "truncated", "caption": "A caption.",
         "expect": "image_undecodable"},
        {"image": random_bytes(), "image_id": "random", "caption": "A caption.",
         "expect": "image_undecodable"},
        {"image": jpeg_bytes(), "image_id": "empty-caption", "caption": "",
         "expect": "caption_empty"},
        {"image": jpeg_bytes(), "image_id": "blank-caption", "caption": "  \t\n ",
         "expect": "caption_empty"},
        {"image": jpeg_bytes(), "image_id": "null-caption", "caption": None,
         "expect": "caption_missing"},
        {"image": None, "image_id": "null-image", "caption": "A caption.",
         "expect": "image_missing"},
        {"image": b"", "image_id": "empty-bytes", "caption": "A caption.",
         "expect": "image_undecodable"},
        {"image": jpeg_bytes(seed=3), "image_id": "good-2", "caption": "CT of the abdomen."},
    ]


def write_parquet(table: pa.Table, path) -> None:
    pq.write_table(table, str(path))


def with_scoring(**kwargs) -> dict:
    """Job-config keyword arguments with the scoring settings (k, rerank_k, alpha, block,
    chunk, precision) gathered into the one ``ScoringSettings`` they travel in."""
    import dataclasses

    from core.scoring.settings import ScoringSettings

    names = {f.name for f in dataclasses.fields(ScoringSettings)}
    settings = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
    return {**kwargs, "scoring": ScoringSettings(**settings)}


def tiny_models_and_features(queries: int, gallery: int) -> tuple[dict, dict]:
    """Seeded random ``tiny`` two-tower and fusion models (eval mode) and both models'
    (text, image) features of ``queries`` and ``gallery`` random pairs (64 px, 8 tokens):
    ({kind: model}, {"q" | "g": {kind: (text, image)}})."""
    import torch

    from core.config import load_config
    from core.models import build_model

    torch.manual_seed(0)
    models, feats = {}, {}
    for kind in ("two_tower", "fusion"):
        cfg = load_config("tiny", [f"model.kind={kind}"])
        cfg.model.text.vocab_size = 100
        models[kind] = build_model(cfg.model).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, n in (("q", queries), ("g", gallery)):
            px = torch.randint(0, 255, (n, 3, 64, 64), dtype=torch.uint8, generator=gen)
            ids = torch.randint(5, 100, (n, 8), generator=gen)
            mask = torch.ones(n, 8, dtype=torch.long)
            feats[name] = {k: (m.encode_text(ids, mask), m.encode_image(px)) for k, m in models.items()}
    return models, feats


def tiny_explained_model(kind: str):
    """A seeded ``tiny`` model of ``kind`` (text vocabulary 200), in eval mode, to explain."""
    import torch

    from core.config import load_config
    from core.models import build_model

    torch.manual_seed(0)
    cfg = load_config("tiny", [f"model.kind={kind}"])
    cfg.model.text.vocab_size = 200
    return build_model(cfg.model).eval()


def explained_pair(n_tokens=9, length=12):
    """One seeded (pixels (1,3,64,64) uint8, input ids, attention mask) pair to explain."""
    import torch

    torch.manual_seed(1)
    px = torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8)
    ids = torch.zeros(1, length, dtype=torch.long)
    ids[0, :n_tokens] = torch.randint(5, 200, (n_tokens,))
    mask = (ids != 0).long()
    return px, ids, mask
