"""The compositional attributes of a synthetic ROCOv2 case, their concept ids, and how cases
are sampled, including the one-attribute siblings that make retrieval fine-grained.

Every attribute is both drawn in the image and stated in the caption:

  modality    xray | ct | mri | ultrasound         how the whole image looks
  region      chest | abdomen | head | pelvis      the body outline and its organs
  finding     nodule | mass | cyst | calcification | abscess | normal   the lesion's look
  laterality  left | right     the side of the lesion (patient's left = image right, as
                               radiographs are read)
  position    upper | lower    the half of the organ the lesion sits in
  size        small | medium | large, with a size in mm stated in the caption
  count       1 | 2 | 3        how many lesions

A "normal" case has no laterality, position, size or count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

MODALITIES = ("xray", "ct", "mri", "ultrasound")
REGIONS = ("chest", "abdomen", "head", "pelvis")
FINDINGS = ("nodule", "mass", "cyst", "calcification", "abscess", "normal")
LATERALITIES = ("left", "right")
POSITIONS = ("upper", "lower")
SIZES = ("small", "medium", "large")
COUNTS = (1, 2, 3)

SIZE_RANGES_MM = {"small": (4.0, 14.0), "medium": (15.0, 29.0), "large": (30.0, 60.0)}

# One concept id per attribute value. The four modality ids are the UMLS CUIs ROCOv2 uses
# for its modality concepts; the others are UMLS-style ids for the named concepts.
CUIS = {
    ("modality", "xray"): "C1306645",
    ("modality", "ct"): "C0040405",
    ("modality", "mri"): "C0024485",
    ("modality", "ultrasound"): "C0041618",
    ("region", "chest"): "C0817096",
    ("region", "abdomen"): "C0000726",
    ("region", "head"): "C0018670",
    ("region", "pelvis"): "C0030797",
    ("finding", "nodule"): "C0028259",
    ("finding", "mass"): "C0577559",
    ("finding", "cyst"): "C0010709",
    ("finding", "calcification"): "C0006660",
    ("finding", "abscess"): "C0000833",
    ("finding", "normal"): "C0205307",
    ("laterality", "left"): "C0205091",
    ("laterality", "right"): "C0205090",
    ("position", "upper"): "C1282910",
    ("position", "lower"): "C1282911",
    ("size", "small"): "C0700321",
    ("size", "medium"): "C0439536",
    ("size", "large"): "C0549177",
    ("count", "1"): "C0205171",
    ("count", "2"): "C0205448",
    ("count", "3"): "C0439064",
}


@dataclass(frozen=True)
class Case:
    modality: str
    region: str
    finding: str
    laterality: str | None = None
    position: str | None = None
    size: str | None = None
    size_mm: float | None = None
    count: int | None = None

    @property
    def is_normal(self) -> bool:
        return self.finding == "normal"

    def cuis(self) -> list[str]:
        items = [("modality", self.modality), ("region", self.region),
                 ("finding", self.finding)]
        if not self.is_normal:
            items += [("laterality", self.laterality), ("position", self.position),
                      ("size", self.size), ("count", str(self.count))]
        return [CUIS[item] for item in items]

    def as_dict(self) -> dict:
        return asdict(self)


def sample_case(rng: np.random.Generator, normal_fraction: float = 0.15) -> Case:
    modality = MODALITIES[rng.integers(len(MODALITIES))]
    region = REGIONS[rng.integers(len(REGIONS))]
    if rng.random() < normal_fraction:
        return Case(modality, region, "normal")
    finding = FINDINGS[rng.integers(len(FINDINGS) - 1)]
    size = SIZES[rng.integers(len(SIZES))]
    lo, hi = SIZE_RANGES_MM[size]
    return Case(modality, region, finding,
                laterality=LATERALITIES[rng.integers(2)],
                position=POSITIONS[rng.integers(2)],
                size=size, size_mm=round(float(rng.uniform(lo, hi)), 1),
                count=int(COUNTS[rng.choice(3, p=[0.6, 0.25, 0.15])]))


# The attributes a sibling can differ in, and the generator's column(s) that state each.
SIBLING_ATTRIBUTES = {"laterality": ("laterality",), "position": ("position",),
                      "modality": ("modality",), "finding": ("finding",),
                      "size": ("size_mm",), "count": ("lesion_count",)}


def flip(case: Case, attribute: str, rng: np.random.Generator | None = None) -> Case:
    """The same case with one attribute changed: the hard negative of a family. Two-valued
    attributes swap; the others take another value drawn with ``rng`` (a size class gets a
    size in mm from its own range)."""
    rng = rng if rng is not None else np.random.default_rng(0)

    def other(values, current):
        choices = [v for v in values if v != current]
        return choices[rng.integers(len(choices))]

    if attribute == "laterality":
        return replace(case, laterality="right" if case.laterality == "left" else "left")
    if attribute == "position":
        return replace(case, position="lower" if case.position == "upper" else "upper")
    if attribute == "modality":
        return replace(case, modality=other(MODALITIES, case.modality))
    if attribute == "finding":
        return replace(case, finding=other(FINDINGS[:-1], case.finding))  # never "normal"
    if attribute == "size":
        size = other(SIZES, case.size)
        lo, hi = SIZE_RANGES_MM[size]
        return replace(case, size=size, size_mm=round(float(rng.uniform(lo, hi)), 1))
    if attribute == "count":
        return replace(case, count=int(other(COUNTS, case.count)))
    raise ValueError(f"cannot flip {attribute!r}")


def combination(case: Case) -> Case:
    """The case's attribute combination: every categorical attribute, the mm value dropped
    (two cases of one combination differ only in the exact size within its class)."""
    return replace(case, size_mm=None)


def sample_family(rng: np.random.Generator, sibling_fraction: float = 0.5,
                  normal_fraction: float = 0.15) -> list[Case]:
    """One case, and with probability ``sibling_fraction`` one or two siblings, each the case
    with ONE attribute changed (laterality, position, modality, finding, size or count;
    the first two twice as often: they are what only a spatial model can see), so a gallery
    holds many pairs that differ in exactly one attribute."""
    base = sample_case(rng, normal_fraction)
    if base.is_normal or rng.random() >= sibling_fraction:
        return [base]
    names = list(SIBLING_ATTRIBUTES)
    weights = np.array([2.0, 2.0, 1.0, 1.0, 1.0, 1.0])
    n = 1 if rng.random() < 0.7 else 2
    chosen = rng.choice(len(names), size=n, replace=False, p=weights / weights.sum())
    return [base] + [flip(base, names[i], rng) for i in chosen]
