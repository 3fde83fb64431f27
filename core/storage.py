"""Where things are stored: local paths or fsspec URLs (``s3://``, ``gs://``, ``hf://``),
written atomically, read back safely. The one place that knows about filesystems.

- ``is_url`` / ``absolute``: a local path is made absolute (Ray tasks and Tune trials run in
  other working directories); a URL is left as it is.
- ``filesystem(url)``: the fsspec filesystem and the path inside it.
- ``write_bytes`` / ``write_json`` / ``write_arrays`` / ``write_parquet``: temp file +
  rename, so a crashed job never leaves a half-written file that a rerun would trust.
- JSON is strict (``allow_nan=False``): NaN and infinities become ``null`` before writing,
  so every file parses with strict parsers; ``json_safe`` does that conversion.
- Arrays are ``.npz`` without pickle; nothing read back here can execute code.
"""

from __future__ import annotations

import io
import json
import math
import posixpath
import uuid
from pathlib import Path
from typing import Any

import numpy as np


def is_url(path: Any) -> bool:
    return "://" in str(path)


def absolute(path: str | Path) -> str:
    """A URL unchanged; a local path made absolute."""
    return str(path) if is_url(path) else str(Path(path).expanduser().resolve())


def filesystem(url: str | Path, storage_options: dict | None = None):
    """(fsspec filesystem, path inside it) for a local path or any fsspec URL."""
    import fsspec

    return fsspec.core.url_to_fs(str(url), **(storage_options or {}))


def join(root: str | Path, *names: str) -> str:
    return posixpath.join(str(root), *names) if is_url(root) else str(Path(root, *names))


def relative_to(path: str, root: str) -> str:
    """``path`` relative to ``root`` when it lies inside it (runs stay relocatable)."""
    if is_url(path) or is_url(root):
        return path
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return path


def exists(root: str | Path, name: str = "") -> bool:
    fs, base = filesystem(root)
    return fs.exists(posixpath.join(base, name) if name else base)


def write_bytes(root: str | Path, name: str, data: bytes) -> None:
    """Write ``root/name`` atomically: a temp file in the same directory, then a rename."""
    fs, base = filesystem(root)
    path = posixpath.join(base, name)
    fs.makedirs(posixpath.dirname(path) or base, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    fs.pipe(tmp, data)
    fs.mv(tmp, path)


def read_bytes(root: str | Path, name: str) -> bytes:
    fs, base = filesystem(root)
    return fs.cat(posixpath.join(base, name))


def json_safe(value: Any) -> Any:
    """NaN / inf -> None, numpy scalars and arrays -> Python, recursively."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def dumps_json(value: Any) -> str:
    return json.dumps(json_safe(value), indent=2, allow_nan=False, ensure_ascii=False)


def write_json(root: str | Path, name: str, value: Any) -> None:
    write_bytes(root, name, (dumps_json(value) + "\n").encode("utf-8"))


def read_json(root: str | Path, name: str) -> Any:
    return json.loads(read_bytes(root, name).decode("utf-8"))


def write_arrays(root: str | Path, name: str, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(root, name, buf.getvalue())


def read_arrays(root: str | Path, name: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(read_bytes(root, name)), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def write_parquet(root: str | Path, name: str, table) -> None:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_bytes(root, name, buf.getvalue())


def read_parquet(root: str | Path, name: str):
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(read_bytes(root, name)))


def write_text(root: str | Path, name: str, text: str) -> None:
    write_bytes(root, name, text.encode("utf-8"))


def file_identity(path: str | Path) -> dict:
    """What identifies a file's content cheaply and safely: its size and a BLAKE2 digest
    (the weights of a checkpoint, a data shard's footer is not enough)."""
    fs, p = filesystem(path)
    return {"size": int(fs.size(p)), "blake2b": _blake2b(fs, p)}


# digests a store reports for an object's bytes: S3's ETag, GCS's md5Hash, the Hugging Face
# Hub's LFS sha256 (under "lfs") and git blob id
REPORTED_DIGESTS = ("ETag", "md5Hash", "sha256", "blob_id")
_DIGESTS: dict = {}  # (protocol, path, size, modification stamp) -> BLAKE2, this process


def content_digest(fs, path: str, info: dict | None = None) -> str:
    """A digest of a file's bytes, never of where it lives or when it was written: the one
    its store reports (``REPORTED_DIGESTS``), else BLAKE2 over its bytes (local files),
    computed once per process for a (path, size, modification stamp)."""
    info = fs.info(path) if info is None else info
    reported = {**info, **(info.get("lfs") or {})}
    for name in REPORTED_DIGESTS:
        if reported.get(name):
            return f"{name}:{str(reported[name]).strip(chr(34))}"
    stamp = info.get("mtime") or info.get("LastModified") or info.get("created") or ""
    key = (str(getattr(fs, "protocol", "")), path, int(info.get("size") or 0), str(stamp))
    if key not in _DIGESTS:
        _DIGESTS[key] = f"blake2b:{_blake2b(fs, path)}"
    return _DIGESTS[key]


def _blake2b(fs, path: str) -> str:
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    with fs.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
