"""Cached work, keyed on what produced it.

Encoded features and finished work items are reused on a rerun only when everything that
produced them is the same: checkpoint content, data source and shards, split, max items,
block, chunk, K, model kind, precision. Each kind of work lives in ``<root>/<kind>-<digest>``
with its key in ``key.json``; another key gets another directory (nothing earlier is
overwritten or lost), and the log says which inputs changed since the latest one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

from core import storage

log = logging.getLogger("rocoray.cache")

KEY = "key.json"


def digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(storage.json_safe(key), sort_keys=True).encode()).hexdigest()[:16]


def _others(root: str, kind: str, exclude: str) -> list[dict]:
    fs, base = storage.filesystem(root)
    if not fs.exists(base):
        return []
    found = []
    for path in fs.glob(f"{base}/{kind}-*/{KEY}"):
        if exclude in path:
            continue
        try:
            found.append(json.loads(fs.cat(path)))
        except (OSError, ValueError):
            continue
    return found


def describe_change(old: dict, new: dict) -> str:
    keys = sorted(set(old.get("key", {})) | set(new))
    changed = [k for k in keys if old.get("key", {}).get(k) != new.get(k)]
    return ", ".join(changed) or "nothing (an earlier copy)"


def keyed_dir(root: str, kind: str, key: dict) -> tuple[str, bool]:
    """(the work directory for ``key``, whether it already existed)."""
    name = f"{kind}-{digest(key)}"
    path = storage.join(root, name)
    if storage.exists(path, KEY):
        return path, True
    earlier = _others(root, kind, name)
    if earlier:
        latest = max(earlier, key=lambda e: e.get("created", 0))
        log.info("%s: computing anew (the latest cached %s in %s came from other inputs: %s)",
                 kind, kind, root, describe_change(latest, storage.json_safe(key)))
    storage.write_json(path, KEY, {"kind": kind, "key": key, "created": time.time()})
    return path, False
