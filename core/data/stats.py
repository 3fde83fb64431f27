"""Dataset statistics: rows kept and skipped (by reason), caption length, image size, and
attribute distributions."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

from core.data.preprocess import count_skips

ATTRIBUTE_COLUMNS = ("modality", "body_region", "finding", "laterality", "position",
                     "lesion_count", "view")


def summarize_split(facts: dict[str, np.ndarray], split: str) -> dict:
    """``facts`` holds Preprocessor.inspect columns for every row of the split."""
    skip = np.asarray(facts.get("skip", np.zeros(0, np.int8)))
    ok = skip == 0
    words = np.asarray(facts.get("caption_words", []))[ok]
    width = np.asarray(facts.get("width", []))[ok]
    height = np.asarray(facts.get("height", []))[ok]
    groups = np.asarray(facts.get("group", []))[ok]
    def describe(a):
        if a.size == 0:
            return None
        return {"mean": round(float(a.mean()), 2), "median": float(np.median(a)),
                "min": int(a.min()), "max": int(a.max())}
    return {
        "split": split,
        "rows": int(skip.size),
        "kept": int(ok.sum()),
        "skipped": count_skips(skip),
        "caption_words": describe(words),
        "image_width": describe(width),
        "image_height": describe(height),
        "unique_captions": int(np.unique(groups).size),
    }


def attribute_distribution(table: pa.Table, columns=ATTRIBUTE_COLUMNS) -> dict[str, dict]:
    """Value counts of the metadata columns a split has (synthetic attributes, or the real
    sample's modality/view/finding)."""
    out = {}
    for name in columns:
        if name in table.column_names:
            counts = Counter("none" if v is None else str(v)
                             for v in table.column(name).to_pylist())
            out[name] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def format_statistics(stats: list[dict]) -> str:
    """A plain-text table of per-split statistics, for logs and the README."""
    header = (f"{'split':<12}{'rows':>7}{'kept':>7}{'skipped':>9}{'words':>8}{'uniq.cap':>10}"
              f"{'cui/row':>9}{'no cui':>8}{'unk.cui':>9}  skipped by reason")
    lines = [header, "-" * len(header)]
    for s in stats:
        skipped = sum(s["skipped"].values())
        words = s["caption_words"]["mean"] if s["caption_words"] else 0
        reasons = ", ".join(f"{k}={v}" for k, v in s["skipped"].items()) or "-"
        c = s.get("concepts") or {}
        lines.append(f"{s['split']:<12}{s['rows']:>7}{s['kept']:>7}{skipped:>9}{words:>8.1f}"
                     f"{s['unique_captions']:>10}{c.get('mean_concepts_per_row', 0):>9.1f}"
                     f"{c.get('rows_without_concepts', 0):>8}{c.get('unknown_ids', 0):>9}"
                     f"  {reasons}")
    return "\n".join(lines)
