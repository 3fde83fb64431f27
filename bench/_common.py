"""Shared by the benchmark scripts: where results go and how they are printed."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _code_at_start() -> dict:
    from core.provenance import code_state

    return code_state()


# The code a benchmark measures is the code when it started (files edited while it runs
# do not change what it measured): its results file records this state.
CODE_AT_START = _code_at_start()
HELD_OUT = "data/synthetic-heldout"


def machine() -> dict:
    import torch

    from core.provenance import machine as described

    return {**described(), "threads": torch.get_num_threads()}


def write_result(result: dict, data=None, provenance: dict | None = None,
                 out: str | None = None) -> Path:
    """bench/results/<bench>.json with its provenance (commit, time, command, machine, the
    data read: ``data``, else the result's own ``data`` field; ``provenance``: a run's own,
    when the result collects a run made earlier); data paths made portable."""
    from core.provenance import portable_path
    from core.provenance import provenance as now

    data = data if data is not None else result.get("data")
    if isinstance(result.get("data"), str):
        result = {**result, "data": portable_path(result["data"])}
    result = {"machine": machine(), **result,
              "provenance": provenance or now(data, code=CODE_AT_START)}
    path = Path(out) if out else RESULTS / f"{result['bench']}.json"  # out: a smoke run's file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"})[:2000])
    return path


def load_fusion(checkpoint: str | None, kind: str = "fusion"):
    """(model, tokenizer, config, description): a trained checkpoint when there is one (the
    demo's), else a seeded random tiny model with the synthetic data's tokenizer."""
    import torch

    from core.checkpoint import load_checkpoint
    from core.config import load_config
    from core.data.tokenizer import load_tokenizer
    from core.models import build_model

    if checkpoint and Path(checkpoint).exists():
        from core.checkpoint import resolve_checkpoint

        path = resolve_checkpoint(checkpoint)
        loaded = load_checkpoint(path, expected_kind=kind)
        return loaded.model.eval(), loaded.tokenizer, loaded.config, f"trained: {path}"
    torch.manual_seed(0)
    tokenizer = load_tokenizer("data/synthetic/tokenizer")
    cfg = load_config("tiny", [f"model.kind={kind}"])
    cfg.model.text.vocab_size = len(tokenizer)
    return build_model(cfg.model).eval(), tokenizer, cfg, "random init (seed 0)"


def load_gallery(cfg, tokenizer, data: str, split: str, n: int):
    """The first n valid rows of a split, preprocessed: a host ``core.batch.Batch``."""
    from core.batch import collate
    from core.data.preprocess import build_preprocessor
    from core.data.rocov2 import read_split

    table = read_split(data, split, max_rows=n)
    if table.num_rows < n:
        raise SystemExit(f"{data}/{split} has {table.num_rows} rows, {n} needed: "
                         f"rocoray prepare --synthetic --n-train {n}")
    return collate(build_preprocessor(cfg.model, tokenizer)(table))


def held_out_split(n: int, path: str = HELD_OUT, seed: int = 2026) -> tuple[str, str]:
    """(data, split): a synthetic test split of n pairs from another seed than the demo's
    data, so the trained demo models are measured on pairs they never saw. Made once."""
    from core.data.rocov2 import read_split
    from core.synthetic.generate import SyntheticSpec, write_synthetic

    try:
        if read_split(path, "test", columns=["image_id"]).num_rows >= n:
            return path, "test"
    except (FileNotFoundError, ValueError):
        pass
    print(f"writing a held-out synthetic test split of {n} pairs (seed {seed}) to {path}")
    write_synthetic(SyntheticSpec(sizes={"test": n}, seed=seed), path)
    return path, "test"


def shuffled_batches(arrays: dict, batch_size: int, seed: int | None):
    """Host batches (``core.batch.collate``) of a dict of row arrays, in a seeded random
    order (``seed`` None: in order): the in-process training loop of the variant benches."""
    import numpy as np

    from core.batch import collate

    n = len(arrays["group"])
    order = np.random.default_rng(seed).permutation(n) if seed is not None else np.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield collate({k: v[idx] for k, v in arrays.items()})
