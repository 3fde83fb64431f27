"""Captions for synthetic cases: several templates, synonyms, optional clinical filler, and
sizes in mm or cm, about 20 words on average like ROCOv2's."""

from __future__ import annotations

import numpy as np

from core.synthetic.attributes import Case

MODALITY_NAMES = {
    "xray": ["X-ray", "Plain radiograph", "Radiograph", "Conventional radiograph"],
    "ct": ["CT scan", "Computed tomography", "Axial CT image", "Contrast-enhanced CT"],
    "mri": ["MRI", "Magnetic resonance image", "T2-weighted MRI", "Axial MR image"],
    "ultrasound": ["Ultrasound", "Sonographic image", "Ultrasonography", "Ultrasound image"],
}
REGION_NAMES = {
    "chest": ["chest", "thorax"],
    "abdomen": ["abdomen", "abdomen"],
    "head": ["head", "brain"],
    "pelvis": ["pelvis", "pelvic region"],
}
REGION_PARTS = {
    "chest": ["lung", "hemithorax", "lung zone"],
    "abdomen": ["quadrant", "abdomen"],
    "head": ["hemisphere", "cerebral hemisphere"],
    "pelvis": ["hemipelvis", "pelvic sidewall"],
}
FINDING_NAMES = {
    "nodule": ["nodule", "nodular lesion"],
    "mass": ["mass", "soft-tissue mass"],
    "cyst": ["cyst", "cystic lesion"],
    "calcification": ["calcification", "calcified focus"],
    "abscess": ["abscess", "rim-enhancing collection"],
}
POSITION_NAMES = {"upper": ["upper", "superior"], "lower": ["lower", "inferior"]}
COUNT_WORDS = {2: ["two", "two"], 3: ["three", "multiple"]}
FILLERS = [
    "(arrow).", "No other abnormality is seen.", "Follow-up imaging was recommended.",
    "Findings were confirmed at surgery.", "Clinical correlation is advised.",
    "The patient presented with pain and weight loss.", "Compare with the prior study.",
    "Surrounding structures appear unremarkable.",
]
NORMAL_TEMPLATES = [
    "{Modality} of the {region} showing no abnormality.",
    "Normal {modality} of the {region}: no focal lesion is identified.",
    "{Modality} of the {region} with no acute abnormality and normal appearances throughout.",
    "Unremarkable {modality} of the {region}; no mass, cyst or calcification is seen.",
]
LESION_TEMPLATES = [
    "{Modality} of the {region} showing {lesion} in the {position} {side} {part}.",
    "{Modality} demonstrates {lesion} in the {side} {position} {part}.",
    "{Lesion} {be} seen in the {position} {part} on the {side} on this {modality} of the {region}.",
    "{Modality} of the {region} reveals {lesion} involving the {side} {position} {part}.",
]


def _lower_first(name: str) -> str:
    """"Axial MR image" -> "axial MR image"; acronyms ("CT scan", "MRI") stay as they are."""
    return name if name[:2].isupper() else name[0].lower() + name[1:]


def _pick(rng: np.random.Generator, options):
    return options[rng.integers(len(options))]


def format_size(rng: np.random.Generator, mm: float, adjective: bool = False) -> str:
    """"12 mm", "1.2 cm", or before a noun sometimes "12-mm"."""
    if rng.random() < 0.5:
        return f"{mm:.0f}-mm" if adjective and rng.random() < 0.5 else f"{mm:.0f} mm"
    return f"{mm / 10:.1f} cm"


def _article(word: str) -> str:
    spoken_vowel = word[0] in "aeiou8" or word.startswith(("11", "18"))
    return "an" if spoken_vowel else "a"


def lesion_phrase(rng: np.random.Generator, case: Case) -> str:
    name = _pick(rng, FINDING_NAMES[case.finding])
    if case.count == 1:
        if rng.random() < 0.6:
            size = format_size(rng, case.size_mm, adjective=True)
            return f"{_article(size)} {size} {name}"
        return f"{_article(name)} {name} measuring {format_size(rng, case.size_mm)}"
    size = format_size(rng, case.size_mm)
    word = _pick(rng, COUNT_WORDS[case.count])
    plural = name + "es" if name.endswith("ss") else (
        name[:-1] + "ies" if name.endswith("y") else name + "s")
    if name.endswith("focus"):
        plural = name[:-5] + "foci"
    return f"{word} {plural}, the largest measuring {size}"


def make_caption(rng: np.random.Generator, case: Case) -> str:
    modality = _pick(rng, MODALITY_NAMES[case.modality])
    region = _pick(rng, REGION_NAMES[case.region])
    if case.is_normal:
        text = _pick(rng, NORMAL_TEMPLATES).format(
            Modality=modality,
            modality=_lower_first(modality), region=region)
        n_fill = 1 + int(rng.random() < 0.5)
    else:
        lesion = lesion_phrase(rng, case)
        part = _pick(rng, REGION_PARTS[case.region])
        text = _pick(rng, LESION_TEMPLATES).format(
            Modality=modality,
            modality=_lower_first(modality),
            region=region, lesion=lesion, Lesion=lesion[0].upper() + lesion[1:],
            be="is" if case.count == 1 else "are",
            position=_pick(rng, POSITION_NAMES[case.position]), side=case.laterality, part=part)
        n_fill = int(rng.random() < 0.6)
    if n_fill:
        picks = rng.choice(len(FILLERS), size=n_fill, replace=False)
        text = " ".join([text] + [FILLERS[i] for i in picks])
    return text.replace(". (arrow).", " (arrow).")
