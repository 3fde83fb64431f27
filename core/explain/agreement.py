"""Explanations scored without lesion boxes (real figures have none): how far the
attribution methods agree with each other, and how much the score depends on what they
point at.

- Agreement of two maps of the same pair, as the diagnosis-and-retrieval model cards of this
  field report it: Pearson correlation of the maps (upsampled to pixels), and the IoU of
  their top-5 % and top-20 % most salient pixels. A random map gives the floor.
- Deletion / insertion (Petsiuk et al., RISE): the explained score as the most salient
  pixels are removed (set to the mean image, 0 in standardised space) or inserted into the
  mean image, 10 % at a time; the area under each curve of score - score(mean image), in
  units of the model's typical image effect: the median over the explained pairs of
  |score(full) - score(mean image)|. (Scaled by each pair's own difference instead, one pair
  whose image barely moves its score, a difference of 0.009 against a median of 4, swung a
  model's mean area from 0.3 to -14.7.) A faithful map makes deletion fall fast (low area)
  and insertion rise fast (high area); the random map is the baseline.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F

from core.explain import attribution as explain
from core.models.kind import ModelKind

STEPS = 10  # 0 %, 10 %, ... 100 % of the pixels
TOP = (0.05, 0.20)


def upsample(heat: np.ndarray, size: int) -> np.ndarray:
    t = torch.as_tensor(heat, dtype=torch.float32)[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()


def _top(values: np.ndarray, share: float) -> np.ndarray:
    k = max(1, int(round(share * values.size)))
    mask = np.zeros(values.size, dtype=bool)
    mask[np.argsort(-values.ravel(), kind="stable")[:k]] = True
    return mask


def map_agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Pearson r of two pixel maps and the IoU of their top-5 % / top-20 % pixels."""
    x, y = a.ravel(), b.ravel()
    r = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else 0.0
    out = {"pearson": r}
    for share in TOP:
        ta, tb = _top(x, share), _top(y, share)
        out[f"iou@{int(share * 100)}%"] = float((ta & tb).sum() / (ta | tb).sum())
    return out


def deletion_insertion(model, pixels: torch.Tensor, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor, heat: np.ndarray,
                       scale: float | None = None) -> dict[str, float]:
    """Areas under the deletion and insertion curves of ``heat`` (grid map) for one pair
    (pixels (1,3,S,S) uint8), in units of ``scale`` (default: this pair's own
    score(full) - score(mean image))."""
    deleted, inserted = score_curves(model, pixels, input_ids, attention_mask, heat)
    return curve_areas(deleted, inserted, deleted[0] - deleted[-1] if scale is None else scale)


def curve_areas(deleted: np.ndarray, inserted: np.ndarray, scale: float) -> dict[str, float]:
    """Areas under (curve - score(mean image)) / ``scale``, both curves over 0..100 %."""
    empty = deleted[-1]
    scale = scale if abs(scale) > 1e-6 else 1e-6
    area = lambda curve: float(np.trapezoid((curve - empty) / scale, dx=1.0 / STEPS))  # noqa: E731
    return {"deletion_auc": area(deleted), "insertion_auc": area(inserted)}


@torch.no_grad()
def score_curves(model, pixels: torch.Tensor, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor, heat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The explained score as ``heat``'s most salient pixels are deleted / inserted, 0..100 %
    in STEPS steps: (deletion curve, insertion curve); deletion starts at the full image and
    ends at the mean image. Always in fp32, whatever autocast the maps were made in: a
    two-tower cosine's curve can span little more than bf16's rounding step (2^-8 of it)."""
    model.eval()
    x = explain._standardised(model, pixels).float()
    with torch.autocast(x.device.type, enabled=False):
        return _curves(model, x, input_ids, attention_mask, heat)


def _curves(model, x, input_ids, attention_mask, heat) -> tuple[np.ndarray, np.ndarray]:
    size = x.shape[-1]
    order = np.argsort(-upsample(heat, size).ravel(), kind="stable")
    counts = np.linspace(0, order.size, STEPS + 1).astype(int)
    deleted, inserted = [], []
    for n in counts:
        keep = torch.ones(order.size)
        keep[torch.from_numpy(order[:n])] = 0.0
        keep = keep.view(1, 1, size, size)
        deleted.append(x * keep)
        inserted.append(x * (1 - keep))
    batch = torch.cat(deleted + inserted)
    scores = explain.pair_score(model, batch, input_ids, attention_mask).float().cpu().numpy()
    return scores[:len(counts)], scores[len(counts):]


def agreement_study(cases: list[dict], seed: int = 0, steps: int = explain.IG_STEPS) -> dict:
    """Every map of both models for each case's true pair; per case the agreement of every
    pair of maps of the same model (and across models), and each map's deletion / insertion
    areas, beside a random map's. ``cases``: as ``explain.localisation_study`` takes them,
    without boxes. Returns {"agreement": {"a vs b": {metric: [per case]}}, "faithfulness":
    {map: {metric: [per case]}}, "cases": per-case maps}."""
    rng = np.random.default_rng(seed)
    agreement: dict = {}
    curves: dict = {}  # map label -> (model kind, [(deletion, insertion) per case])
    per_case = []
    for case in cases:
        maps, tokens, pixels_of = {}, {}, None
        for kind, (model, pixels, ids, mask) in case["inputs"].items():
            found = explain.explain(model, pixels, ids, mask, steps)
            tokens[kind] = found.pop("token_ig")
            for name in explain.METHODS[kind]:
                maps[(kind, name)] = found[name]
                curves.setdefault(explain.LABELS[(kind, name)], (kind, []))[1].append(
                    score_curves(model, pixels, ids, mask, found[name]))
            noise = explain.random_map(maps[(kind, explain.METHODS[kind][0])].shape, rng)
            curves.setdefault(f"random map ({kind.replace('_', '-')})", (kind, []))[1].append(
                score_curves(model, pixels, ids, mask, noise))
            pixels_of = pixels
        size = pixels_of.shape[-1]
        up = {explain.LABELS[k]: upsample(v, size) for k, v in maps.items()}
        grid = next(iter(maps.values())).shape
        up["random map"] = upsample(explain.random_map(grid, rng), size)
        for a, b in combinations(up, 2):
            if b == "random map" or a == "random map":
                continue
            entry = agreement.setdefault(f"{a} vs {b}", {})
            for metric, value in map_agreement(up[a], up[b]).items():
                entry.setdefault(metric, []).append(value)
        fusion_gradcam = (ModelKind.FUSION, "gradcam")
        first = explain.LABELS[fusion_gradcam] if fusion_gradcam in maps else next(iter(up))
        entry = agreement.setdefault(f"{first} vs random map", {})
        for metric, value in map_agreement(up[first], up["random map"]).items():
            entry.setdefault(metric, []).append(value)
        per_case.append({"maps": {explain.LABELS[k]: v for k, v in maps.items()},
                         "token_ig": tokens})
    return {"agreement": agreement, "faithfulness": faithfulness_areas(curves), "cases": per_case}


def faithfulness_areas(curves: dict) -> dict:
    """{map: {"deletion_auc" / "insertion_auc": [per case]}} from ``curves`` (map -> (model
    kind, [(deletion, insertion) per case])): every pair's curves in units of its model's
    median |score(full) - score(mean image)| over the cases, oriented by the sign of the
    pair's own difference (so deletion falls and insertion rises for a faithful map)."""
    spans: dict = {}
    for kind, pairs in curves.values():  # every map of a pair shares its full and mean image
        spans.setdefault(kind, [d[0] - d[-1] for d, _ in pairs])
    median = {kind: float(np.median(np.abs(s))) for kind, s in spans.items()}
    out: dict = {}
    for label, (kind, pairs) in curves.items():
        entry = out.setdefault(label, {})
        for (d, i), span in zip(pairs, spans[kind]):
            scale = median[kind] if span >= 0 else -median[kind]
            for metric, value in curve_areas(d, i, scale).items():
                entry.setdefault(metric, []).append(value)
    return out
