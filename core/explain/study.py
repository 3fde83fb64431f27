"""The report's explanation section, end to end in one process (no Ray): read the test pairs
that have a lesion box, explain each true pair with every method of both models, score the
maps against the boxes, and draw (a) the maps of three pairs side by side and (b) the fusion
model's Grad-CAM on the report's example queries' top-3 retrieved images, with the query
caption's tokens shaded by their Integrated-Gradients attribution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.explain import attribution as explain
from core.data.preprocess import build_preprocessor
from core.data.rocov2 import read_split
from core.explain.figure import overlay_figure, retrieved_figure, shaded_caption
from core.evaluation.significance import bootstrap_ci
from core.precision import autocast

NO_BOXES = "n/a: no lesion boxes in this data (the synthetic set states them)"
COLUMNS = ["image_id", "image", "caption", "cui", "lesion_box"]


def _tensors(batch: dict, i: int):
    return (torch.from_numpy(batch["pixel_values"][i:i + 1]),
            torch.from_numpy(batch["input_ids"][i:i + 1]),
            torch.from_numpy(batch["attention_mask"][i:i + 1]))


def _tokens(tokenizer, batch: dict, i: int) -> list[str]:
    ids = batch["input_ids"][i][batch["attention_mask"][i] == 1]
    return tokenizer.convert_ids_to_tokens(ids.tolist())


def top3_overlays(examples: list[dict], table, loaded, figures: Path) -> dict | None:
    """Grad-CAM of each example query caption on its top-3 retrieved images (fusion match
    logit), the retrieved images' lesion boxes, and the caption shaded by token IG against
    the top-1 image. ``examples``: the report's text -> image examples of one method."""
    if not examples:
        return None
    ids = table.column("image_id").to_pylist()
    where = {image_id: i for i, image_id in enumerate(ids)}
    wanted = sorted({where[e["query_id"]] for e in examples}
                    | {where[t] for e in examples for t in e["top_ids"]})
    sub = table.take(wanted)
    row = {ids[j]: k for k, j in enumerate(wanted)}
    batch = build_preprocessor(loaded.config.model, loaded.tokenizer)(sub)
    boxes = sub.column("lesion_box").to_pylist() if "lesion_box" in sub.column_names else [None] * len(wanted)
    model = loaded.model.eval()
    grid, captions = [], []
    for e in examples:
        q = row[e["query_id"]]
        _, ids_q, mask_q = _tensors(batch, q)
        cells = []
        for rank, image_id in enumerate(e["top_ids"][:3], start=1):
            px = _tensors(batch, row[image_id])[0]
            heat = explain.fusion_attention(model, px, ids_q, mask_q)["gradcam"]
            hit = "correct" if image_id == e["query_id"] else "other"
            cells.append((batch["pixel_values"][row[image_id]][0], boxes[row[image_id]], heat,
                          f"#{rank} {image_id[-6:]} ({hit})"))
        grid.append(cells)
        top1 = _tensors(batch, row[e["top_ids"][0]])[0]
        attribution = explain.token_ig(model, top1, ids_q, mask_q)
        captions.append({"query_id": e["query_id"],
                         "html": shaded_caption(_tokens(loaded.tokenizer, batch, q), attribution)})
    return {"figure": str(retrieved_figure(grid, figures / "top3_gradcam.png")),
            "captions": captions}


def _cases(sub, loaded: dict):
    batches = {kind: build_preprocessor(lo.config.model, lo.tokenizer)(sub)
               for kind, lo in loaded.items()}
    keep = [i for i in range(sub.num_rows) if all(b["skip"][i] == 0 for b in batches.values())]
    return batches, keep


def box_free_study(table, loaded: dict, cases_wanted: int, figures: Path, examples) -> dict:
    """Real figures have no lesion boxes: the maps of the first ``cases_wanted`` test pairs
    scored by agreement between methods and by deletion / insertion (``core.explain.agreement``)."""
    from core.explain.agreement import agreement_study

    sub = table.slice(0, cases_wanted)
    batches, keep = _cases(sub, loaded)
    if not keep:
        return {"available": False, "reason": "n/a: no usable test pairs to explain"}
    cases = [{"inputs": {kind: (loaded[kind].model, *_tensors(b, i)) for kind, b in batches.items()}}
             for i in keep]
    study = agreement_study(cases)
    ci = lambda groups: {name: {m: bootstrap_ci(v).as_dict() for m, v in s.items()}  # noqa: E731
                         for name, s in groups.items()}
    shown = keep[:3]
    fusion = batches["fusion"]
    figure = overlay_figure(
        [fusion["pixel_values"][i][0] for i in shown], [None] * len(shown),
        [study["cases"][j]["maps"] for j in range(len(shown))], figures / "explanations.png")
    captions = [{"image_id": sub.column("image_id")[i].as_py(),
                 "html": shaded_caption(_tokens(loaded["fusion"].tokenizer, fusion, i),
                                        study["cases"][j]["token_ig"]["fusion"])}
                for j, i in enumerate(shown)]
    return {"available": True, "mode": "agreement", "cases": len(cases),
            "agreement": ci(study["agreement"]), "faithfulness": ci(study["faithfulness"]),
            "figure": str(figure), "captions": captions,
            "top3": top3_overlays(examples or [], table, loaded["fusion"], figures)}


def explanation_study(data, split: str, loaded: dict, cases_wanted: int, figures: Path,
                      examples: list[dict] | None = None, precision: str = "fp32") -> dict:
    """Localisation scores of every map (bootstrap CIs), the side-by-side figure, and the
    top-3 overlays of the example queries. ``loaded``: kind -> ``core.checkpoint.Loaded``.
    Every score explained is computed in ``precision``, the one the models are scored in
    (``bench.explain_precision`` compares bf16 maps with fp32 ones, and their time)."""
    if cases_wanted <= 0:
        return {"available": False, "reason": "n/a: --explain-cases 0"}
    device = next(loaded["fusion"].model.parameters()).device
    with autocast(device, precision):
        return _explanation_study(data, split, loaded, cases_wanted, figures, examples)


def _explanation_study(data, split, loaded, cases_wanted, figures, examples) -> dict:
    table = read_split(data, split, columns=COLUMNS)  # lesion_box only where the data has it
    boxes = (table.column("lesion_box").to_pylist() if "lesion_box" in table.column_names
             else [None] * table.num_rows)
    rows = [i for i, b in enumerate(boxes) if b][:cases_wanted]
    if not rows:
        return box_free_study(table, loaded, cases_wanted, figures, examples)
    sub = table.take(rows)
    batches, keep = _cases(sub, loaded)
    cases = [{"box": boxes[rows[i]],
              "inputs": {kind: (loaded[kind].model, *_tensors(b, i)) for kind, b in batches.items()}}
             for i in keep]
    study = explain.localisation_study(cases)
    scores = {label: {name: bootstrap_ci(values).as_dict() for name, values in s.items()}
              for label, s in study["scores"].items()}
    shown = keep[:3]
    fusion = batches["fusion"]
    figure = overlay_figure(
        [fusion["pixel_values"][i][0] for i in shown], [boxes[rows[i]] for i in shown],
        [{k: v for k, v in study["cases"][j]["maps"].items() if k != "random map"}
         for j in range(len(shown))], figures / "explanations.png")
    captions = [{"image_id": sub.column("image_id")[i].as_py(),
                 "html": shaded_caption(_tokens(loaded["fusion"].tokenizer, fusion, i),
                                        study["cases"][j]["token_ig"]["fusion"])}
                for j, i in enumerate(shown)]
    area = float(np.mean([(b[2] - b[0]) * (b[3] - b[1]) for b in (boxes[rows[i]] for i in keep)]))
    return {"available": True, "cases": len(cases), "mean_box_area": area,
            "localisation": scores, "figure": str(figure), "captions": captions,
            "top3": top3_overlays(examples or [], table, loaded["fusion"], figures)}
