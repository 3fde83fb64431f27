"""Explanations of one (image, caption) score, and how well they point at the lesion.

For the fusion model (score = the match logit):
  - ``attention``: the last cross-attention layer's weights, text tokens -> image patches,
    averaged over heads (per caption token, and over the caption's tokens);
  - ``gradcam``: Grad-CAM on the cross-attention as ALBEF visualises its ITM head: the
    attention weights times their clamped (>= 0) gradient of the match logit, averaged over
    heads;
For the two-tower model (score = the cosine similarity):
  - ``gradcam``: Grad-CAM on the image encoder's last feature grid;
For both, with captum:
  - ``ig``: Integrated Gradients on the (standardised) pixels from a black image, summed
    |attribution| per pixel then per patch cell;
  - ``token_ig``: Integrated Gradients on the caption's token embeddings from [PAD]
    embeddings: one signed number per token.

Every map is over the image encoder's patch grid (h, w), non-negative and summing to 1, so
maps of all methods compare directly. ``localisation`` scores a map against a lesion box:
the pointing game (is the map's peak inside the box) and the share of the map's energy
inside it, beside a random map's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from core.models.kind import ModelKind

IG_STEPS = 32


def _normalise(cam: torch.Tensor) -> np.ndarray:
    cam = cam.detach().float().clamp_min(0)
    total = cam.sum()
    cam = cam / total if total > 0 else torch.full_like(cam, 1.0 / cam.numel())
    return cam.cpu().numpy()


def _grid(model) -> tuple[int, int]:
    return model.image_encoder.grid


def _standardised(model, pixels: torch.Tensor) -> torch.Tensor:
    return model.image_encoder.normalize(pixels)


def pair_score(model, x: torch.Tensor, input_ids: torch.Tensor,
               attention_mask: torch.Tensor) -> torch.Tensor:
    """The score explained: fusion's match logit or the two-tower cosine, for standardised
    pixels ``x`` and captions, either side of batch 1 broadcast over the other."""
    mask = attention_mask.expand(len(input_ids), -1)
    if model.kind == ModelKind.FUSION:  # the model broadcasts a side of batch 1, encoded once
        return model(x, input_ids, mask)
    return (model.embed_image(x) * model.embed_text(input_ids, mask)).sum(-1)


def fusion_attention(model, pixels, input_ids, attention_mask) -> dict:
    """Last-layer cross-attention and its Grad-CAM, per token and over the caption:
    {"attention": (h, w), "gradcam": (h, w), "attention_tokens": (T, h, w),
    "gradcam_tokens": (T, h, w), "logit": float}."""
    # The input requires grad, so the attention weights do whatever the parameters'
    # requires_grad (frozen towers, a model loaded for inference); the gradient is taken
    # from the logit to the weights only, never back into the encoders.
    x = _standardised(model, pixels).detach().requires_grad_(True)
    with torch.enable_grad():
        logit, maps = model(x, input_ids, attention_mask, return_attention=True)
        weights = maps[-1]  # (1, heads, T, P)
        (grad,) = torch.autograd.grad(logit.sum(), weights)
    valid = attention_mask[0].bool()
    att = weights[0].mean(0)[valid]  # (T, P)
    cam = (weights[0] * grad[0].clamp_min(0)).mean(0)[valid]
    gh, gw = _grid(model)
    return {"attention": _normalise(att.mean(0).view(gh, gw)),
            "gradcam": _normalise(cam.mean(0).view(gh, gw)),
            "attention_tokens": np.stack([_normalise(a.view(gh, gw)) for a in att]),
            "gradcam_tokens": np.stack([_normalise(c.view(gh, gw)) for c in cam]),
            "logit": float(logit.detach())}


def grid_gradcam(model, pixels, input_ids, attention_mask) -> np.ndarray:
    """Grad-CAM (Selvaraju et al.) on the image encoder's feature grid, for the score of
    this caption: ReLU(sum_c mean(dscore/dA_c) A_c)."""
    x = _standardised(model, pixels).detach()
    store = {}

    def keep(_module, _inputs, output):
        # The feature map becomes a leaf that requires grad and the forward continues from
        # it: its gradient exists whatever the encoder's parameters' requires_grad (a frozen
        # tower has none of its own).
        store["fmap"] = output.detach().requires_grad_(True)
        return store["fmap"]

    handle = model.image_encoder.backbone.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            score = pair_score(model, x, input_ids, attention_mask).sum()
            (grad,) = torch.autograd.grad(score, store["fmap"])
    finally:
        handle.remove()
    weights = grad[0].mean((1, 2), keepdim=True)
    return _normalise(F.relu((weights * store["fmap"][0]).sum(0)))


def pixel_ig(model, pixels, input_ids, attention_mask, steps: int = IG_STEPS) -> np.ndarray:
    """Integrated Gradients (captum) on the pixels, from a black image, pooled per patch
    cell: (h, w)."""
    from captum.attr import IntegratedGradients

    x = _standardised(model, pixels).detach()
    baseline = _standardised(model, torch.zeros_like(pixels)).detach()
    with torch.enable_grad():
        attr = IntegratedGradients(
            lambda px: pair_score(model, px, input_ids, attention_mask)).attribute(
            x, baselines=baseline, n_steps=steps, internal_batch_size=steps)
    heat = attr[0].abs().sum(0)[None, None]  # (1, 1, S, S)
    return _normalise(F.adaptive_avg_pool2d(heat, _grid(model))[0, 0])


def token_ig(model, pixels, input_ids, attention_mask, steps: int = IG_STEPS) -> np.ndarray:
    """Integrated Gradients (captum) on the caption's word embeddings, from [PAD] (id 0)
    embeddings except [CLS]/[SEP]: one signed attribution per valid token, (T,)."""
    from captum.attr import LayerIntegratedGradients

    x = _standardised(model, pixels).detach()
    embeddings = model.text_encoder.model.get_input_embeddings()
    valid = attention_mask[0].bool()
    baseline = input_ids.clone()
    inner = valid.clone()
    inner[0] = False
    inner[int(valid.sum()) - 1] = False  # keep [CLS] and [SEP]
    baseline[0, inner] = 0

    with torch.enable_grad():
        attr = LayerIntegratedGradients(
            lambda ids: pair_score(model, x, ids, attention_mask), embeddings).attribute(
            input_ids, baselines=baseline, n_steps=steps, internal_batch_size=steps)
    per_token = attr[0].sum(-1)  # the two-tower text path trims all-padding columns first
    return per_token[valid[:len(per_token)]].detach().float().cpu().numpy()


def explain(model, pixels, input_ids, attention_mask, steps: int = IG_STEPS) -> dict:
    """Every map of this model for one pair (pixels (1,3,S,S) uint8, ids/mask (1,T))."""
    model.eval()
    out = {}
    if model.kind == ModelKind.FUSION:
        att = fusion_attention(model, pixels, input_ids, attention_mask)
        out.update(attention=att["attention"], gradcam=att["gradcam"])
    else:
        out["gradcam"] = grid_gradcam(model, pixels, input_ids, attention_mask)
    out["ig"] = pixel_ig(model, pixels, input_ids, attention_mask, steps)
    out["token_ig"] = token_ig(model, pixels, input_ids, attention_mask, steps)
    return out


def box_cells(box, grid: tuple[int, int], resolution: int = 8) -> np.ndarray:
    """The share of each grid cell inside ``box`` [x0, y0, x1, y1] (image fractions),
    sampled at ``resolution`` x ``resolution`` points per cell."""
    x0, y0, x1, y1 = box
    gh, gw = grid
    ys = (np.arange(gh * resolution) + 0.5) / (gh * resolution)
    xs = (np.arange(gw * resolution) + 0.5) / (gw * resolution)
    inside = (ys[:, None] >= y0) & (ys[:, None] <= y1) & (xs[None, :] >= x0) & (xs[None, :] <= x1)
    return inside.reshape(gh, resolution, gw, resolution).mean((1, 3))


def localisation(heat: np.ndarray, box) -> dict:
    """Pointing game hit (the centre of the map's peak cell inside the box) and the share
    of the map's energy inside the box (each cell counted by its share inside)."""
    gh, gw = heat.shape
    i, j = np.unravel_index(np.argmax(heat), heat.shape)
    x, y = (j + 0.5) / gw, (i + 0.5) / gh
    x0, y0, x1, y1 = box
    return {"pointing": bool(x0 <= x <= x1 and y0 <= y <= y1),
            "energy": float((heat * box_cells(box, (gh, gw))).sum())}


def random_map(grid: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The baseline an explanation has to beat: a uniformly random map."""
    m = rng.random(grid)
    return m / m.sum()


METHODS = {"fusion": ("attention", "gradcam", "ig"), "two_tower": ("gradcam", "ig")}
LABELS = {("fusion", "attention"): "fusion cross-attention", ("fusion", "gradcam"):
          "fusion Grad-CAM (ITM)", ("fusion", "ig"): "fusion Integrated Gradients",
          ("two_tower", "gradcam"): "two-tower Grad-CAM", ("two_tower", "ig"):
          "two-tower Integrated Gradients", ("random", "map"): "random map"}


def localisation_study(cases: list[dict], seed: int = 0, steps: int = IG_STEPS) -> dict:
    """Explain each case's true pair with every method and score the maps against its box.

    ``cases``: one dict per image with a lesion box: ``box`` and, per model kind,
    ``inputs[kind] = (model, pixels (1,3,S,S), input_ids (1,T), attention_mask (1,T))``.
    Returns per-case maps (for figures) and per-method pointing / energy lists."""
    rng = np.random.default_rng(seed)
    scores: dict = {}
    per_case = []
    for case in cases:
        maps, tokens = {}, {}
        for kind, (model, pixels, ids, mask) in case["inputs"].items():
            found = explain(model, pixels, ids, mask, steps)
            tokens[kind] = found.pop("token_ig")
            maps.update({(kind, name): found[name] for name in METHODS[kind]})
        grid = next(iter(maps.values())).shape
        maps[("random", "map")] = random_map(grid, rng)
        for key, heat in maps.items():
            found = localisation(heat, case["box"])
            entry = scores.setdefault(LABELS[key], {"pointing": [], "energy": []})
            entry["pointing"].append(float(found["pointing"]))
            entry["energy"].append(found["energy"])
        per_case.append({"maps": {LABELS[k]: v for k, v in maps.items()}, "token_ig": tokens})
    return {"scores": scores, "cases": per_case}
