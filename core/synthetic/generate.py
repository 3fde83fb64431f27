"""Generate a synthetic dataset in exactly the ROCOv2 Parquet layout.

Deterministic per seed: the case plan of a split is drawn from ``(seed, split)``, and every
row is rendered from its own ``(seed, split, row)`` generator, so the bytes do not depend on
how rows are spread over processes or machines (same seed, same bytes).

Families of cases that differ in one attribute (see ``attributes.sample_family``) stay in
one split and are shuffled apart inside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.data.rocov2 import IMAGE_TYPE
from core.synthetic.attributes import Case, combination, sample_family
from core.synthetic.captions import make_caption
from core.synthetic.render import encode_image, render_case

SPLITS = ("train", "validation", "test")
SPLIT_INDEX = {name: i for i, name in enumerate(SPLITS)}

SCHEMA = pa.schema([
    ("image", IMAGE_TYPE),
    ("image_id", pa.string()),
    ("caption", pa.string()),
    ("cui", pa.list_(pa.string())),
    ("modality", pa.string()),
    ("body_region", pa.string()),
    ("finding", pa.string()),
    ("laterality", pa.string()),
    ("position", pa.string()),
    ("size_mm", pa.float32()),
    ("lesion_count", pa.int32()),
    ("family_id", pa.string()),
    # [x0, y0, x1, y1] around the lesions (fractions of the side; null when normal): where
    # an explanation should point (pointing game, energy inside the box)
    ("lesion_box", pa.list_(pa.float32())),
])

# What `datasets` stores in the schema metadata, so `load_dataset("parquet", ...)` decodes
# the image column as an Image feature, exactly as for the real ROCOv2 shards.
_HF_FEATURES = {
    "image": {"_type": "Image"},
    "image_id": {"dtype": "string", "_type": "Value"},
    "caption": {"dtype": "string", "_type": "Value"},
    "cui": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"},
    **{name: {"dtype": dtype, "_type": "Value"} for name, dtype in [
        ("modality", "string"), ("body_region", "string"), ("finding", "string"),
        ("laterality", "string"), ("position", "string"), ("size_mm", "float32"),
        ("lesion_count", "int32"), ("family_id", "string")]},
    "lesion_box": {"feature": {"dtype": "float32", "_type": "Value"}, "_type": "List"},
}
HF_METADATA = {b"huggingface": json.dumps({"info": {"features": _HF_FEATURES}}).encode()}


@dataclass(frozen=True)
class SyntheticSpec:
    sizes: dict = field(default_factory=lambda: {"train": 2000, "validation": 300, "test": 300})
    seed: int = 0
    image_size: int = 224
    sibling_fraction: float = 0.5
    normal_fraction: float = 0.15
    rows_per_shard: int = 1000


@dataclass(frozen=True)
class PlannedRow:
    index: int
    case: Case
    family_id: str


def training_combinations(spec: SyntheticSpec) -> set[Case]:
    """The attribute combinations of the training split's abnormal cases (none when the
    spec has no training split)."""
    if not spec.sizes.get("train"):
        return set()
    return {combination(r.case) for r in plan_split(spec, "train") if not r.case.is_normal}


def plan_split(spec: SyntheticSpec, split: str) -> list[PlannedRow]:
    """The cases of one split, families kept together in the plan then shuffled apart.

    The held-out splits (validation, test) draw only families whose abnormal cases have an
    attribute combination never seen in training: retrieval there is a compositional
    generalisation test, not a look-up of a trained case. Normal cases (16 combinations of
    modality and region) necessarily repeat training combinations."""
    n = spec.sizes[split]
    rng = np.random.default_rng([spec.seed, SPLIT_INDEX[split], 0])
    seen = training_combinations(spec) if split != "train" else set()
    cases: list[tuple[Case, str]] = []
    family = 0
    while len(cases) < n:
        members = sample_family(rng, spec.sibling_fraction, spec.normal_fraction)
        # a family with a seen combination is redrawn as another ABNORMAL family, so the
        # share of normal cases stays the spec's
        while any(not c.is_normal and combination(c) in seen for c in members):
            members = sample_family(rng, spec.sibling_fraction, 0.0)
        for case in members:
            cases.append((case, f"{split}-f{family:06d}"))
        family += 1
    cases = cases[:n]
    order = rng.permutation(n)
    return [PlannedRow(i, *cases[j]) for i, j in enumerate(order)]


def image_id_for(split: str, index: int) -> str:
    return f"ROCOv2_synth_{split}_{index:06d}"


def render_rows(spec: SyntheticSpec, split: str, rows: Iterable[PlannedRow]) -> pa.Table:
    """Render planned rows (image + caption) into a ROCOv2-layout Arrow table."""
    cols: dict[str, list] = {name: [] for name in SCHEMA.names}
    for row in rows:
        rng = np.random.default_rng([spec.seed, SPLIT_INDEX[split], row.index, 1])
        case = row.case
        pixels, box = render_case(case, rng, spec.image_size)
        data, ext = encode_image(pixels, rng)
        image_id = image_id_for(split, row.index)
        cols["image"].append({"bytes": data, "path": f"{image_id}.{ext}"})
        cols["image_id"].append(image_id)
        cols["caption"].append(make_caption(rng, case))
        cols["cui"].append(case.cuis())
        cols["modality"].append(case.modality)
        cols["body_region"].append(case.region)
        cols["finding"].append(case.finding)
        cols["laterality"].append(case.laterality)
        cols["position"].append(case.position)
        cols["size_mm"].append(case.size_mm)
        cols["lesion_count"].append(case.count)
        cols["family_id"].append(row.family_id)
        cols["lesion_box"].append(box)
    return pa.table(cols, schema=SCHEMA)


def shard_name(split: str, shard: int, n_shards: int) -> str:
    return f"{split}-{shard:05d}-of-{n_shards:05d}.parquet"


def write_table(table: pa.Table, path: str | Path) -> None:
    table = table.replace_schema_metadata(HF_METADATA)
    pq.write_table(table, str(path), compression="snappy", row_group_size=256)


@dataclass(frozen=True)
class ShardTask:
    spec: SyntheticSpec
    split: str
    shard: int
    n_shards: int
    rows: tuple[PlannedRow, ...]
    out_dir: str

    def run(self) -> str:
        path = Path(self.out_dir) / shard_name(self.split, self.shard, self.n_shards)
        write_table(render_rows(self.spec, self.split, self.rows), path)
        return str(path)


def shard_tasks(spec: SyntheticSpec, out_dir: str | Path) -> list[ShardTask]:
    tasks = []
    for split in (s for s in SPLITS if s in spec.sizes):  # e.g. only a test split
        rows = plan_split(spec, split)
        n_shards = max(1, -(-len(rows) // spec.rows_per_shard))
        for k in range(n_shards):
            chunk = rows[k * spec.rows_per_shard:(k + 1) * spec.rows_per_shard]
            tasks.append(ShardTask(spec, split, k, n_shards, tuple(chunk), str(out_dir)))
    return tasks


def _run_task(task: ShardTask) -> str:
    return task.run()


SPEC_FILE = "synthetic_spec.json"


# Bumped whenever the same spec would give other bytes (2: siblings in every attribute;
# 3: the lesion_box column, image bytes unchanged).
GENERATOR_VERSION = 4  # 4: held-out splits draw attribute combinations unseen in training


def spec_dict(spec: SyntheticSpec) -> dict:
    return {"version": GENERATOR_VERSION, **{k: v for k, v in spec.__dict__.items()}}


def existing_synthetic(out_dir: str | Path, spec: SyntheticSpec) -> bool:
    """True if ``out_dir`` already holds exactly this spec's data (same spec, same bytes);
    raise ``FileExistsError`` if it holds other shards, which are never overwritten."""
    out_dir = Path(out_dir)
    shards = sorted(out_dir.glob("*.parquet")) if out_dir.exists() else []
    if not shards:
        return False
    spec_file = out_dir / SPEC_FILE
    written = json.loads(spec_file.read_text()) if spec_file.exists() else {}
    if written.get("version", GENERATOR_VERSION) != GENERATOR_VERSION:
        raise FileExistsError(
            f"{out_dir} holds synthetic data of generator version {written.get('version')} "
            f"(this is version {GENERATOR_VERSION}); it is never overwritten: generate into "
            f"another directory (rocoray demo --synthetic-dir DIR, rocoray prepare --out DIR) "
            "or move "
            "it away")
    if written == spec_dict(spec):
        names = {p.name for p in shards}
        if all(Path(t.out_dir, shard_name(t.split, t.shard, t.n_shards)).name in names
               for t in shard_tasks(spec, out_dir)):
            return True
    raise FileExistsError(f"{out_dir} already holds other Parquet shards (another spec or "
                          "generator version); generate into an empty directory instead of "
                          "overwriting them")


def write_synthetic(spec: SyntheticSpec, out_dir: str | Path,
                    map_fn: Callable = map) -> list[str]:
    """Write every split's shards to ``out_dir`` (skipped when it already holds this very
    spec's data; an error when it holds other data). ``map_fn`` spreads the shard tasks
    (the builtin ``map`` here; the prepare job passes Ray tasks)."""
    out_dir = Path(out_dir)
    tasks = shard_tasks(spec, out_dir)
    if existing_synthetic(out_dir, spec):
        return sorted(str(Path(t.out_dir, shard_name(t.split, t.shard, t.n_shards))) for t in tasks)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = list(map_fn(_run_task, tasks))
    (out_dir / SPEC_FILE).write_text(json.dumps(spec_dict(spec), indent=2))
    return sorted(paths)
