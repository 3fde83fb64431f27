"""The explanation section's table and note: localisation against lesion boxes when the data
has them, else agreement between attribution methods and deletion / insertion faithfulness."""

from __future__ import annotations


def _ci(e: dict) -> str:
    return f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"


EXPLANATION_NOTE = ("Each test image with a lesion box is explained for its own caption. "
                    "Pointing game: is the map's peak cell centre inside the lesion box; energy: "
                    "the share of the map inside the box. A random map's energy is about the "
                    "box's area (mean {area:.3f} of the image here). Maps live on the image "
                    "encoder's patch grid; 95 % bootstrap intervals over the {n} images. The "
                    "captions below the figure shade each token by its Integrated-Gradients "
                    "attribution to the fusion match logit (red raises it, blue lowers it).")


AGREEMENT_NOTE = (
    "No lesion boxes in this data, so the maps are scored without them, on {n} test pairs "
    "(each true caption with its image): agreement between two methods' maps of the same "
    "pair (Pearson r of the maps, IoU of their top-5 % and top-20 % most salient pixels; a "
    "random map gives the floor), and faithfulness (the score as the most salient pixels "
    "are deleted from the image or inserted into the mean image, 10 % at a time; area under "
    "the curve of the score minus the mean image's, in units of the model's median change "
    "between the mean and the full image over these pairs: deletion low and insertion high "
    "is faithful; a random map is the baseline). 95 % "
    "bootstrap intervals over pairs.")


def agreement_table(ex: dict) -> tuple[list[str], list[list[str]]]:
    header = ["maps", "Pearson r", "IoU top-5 %", "IoU top-20 %", "deletion AUC",
              "insertion AUC"]
    rows = [[name, "", "", "", _ci(s["deletion_auc"]), _ci(s["insertion_auc"])]
            for name, s in ex["faithfulness"].items()]
    rows += [[pair, _ci(s["pearson"]), _ci(s["iou@5%"]), _ci(s["iou@20%"]), "", ""]
             for pair, s in ex["agreement"].items()]
    return header, rows


def explanation_block(ex: dict | None) -> tuple[str, tuple | None, str, list[str]]:
    """(title, localisation table or None, note, token-shaded captions as HTML)."""
    title = "Explanations and localisation"
    if not ex:
        return title, None, "n/a", []
    if not ex.get("available"):
        return title, None, ex.get("reason", "n/a"), []
    if ex.get("mode") == "agreement":
        return ("Explanations: agreement and faithfulness", agreement_table(ex),
                AGREEMENT_NOTE.format(n=ex["cases"]), [c["html"] for c in ex.get("captions", [])])
    header = ["map", "pointing game", "energy in box"]
    rows = [[label, _ci(s["pointing"]), _ci(s["energy"])] for label, s in ex["localisation"].items()]
    note = EXPLANATION_NOTE.format(area=ex["mean_box_area"], n=ex["cases"])
    return title, (header, rows), note, [c["html"] for c in ex.get("captions", [])]
