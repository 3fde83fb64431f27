"""Draw a synthetic radiology image for a ``Case``.

Each modality has its own look: an X-ray is a bright-bone projection with ribs; a CT is a
cross-section with a bright skin line, dark lungs and the scanner table; an MRI has a bright
fat ring and dark cortical bone; an ultrasound is a speckled fan with acoustic shadows and
enhancement behind lesions. The body region sets the outline and the organs; the finding
sets the lesion's shape and intensity in that modality; laterality and position set where
it sits (patient's left = image right, as radiographs are read); size sets its radius;
count sets how many. Geometry (centre, scale, rotation), contrast, blur and noise are
jittered per image, so no two images are alike.

Drawing uses PIL's C primitives and one numpy noise pass: ~2 ms per 224 px image.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from core.synthetic.attributes import Case

# Grey levels per modality: background, body, dark organ (lung/ventricle), bone, fat ring.
TISSUE = {
    "xray": dict(bg=12, body=95, dark=45, bone=205, fat=95),
    "ct": dict(bg=0, body=105, dark=14, bone=235, fat=80),
    "mri": dict(bg=4, body=100, dark=28, bone=25, fat=190),
    "ultrasound": dict(bg=0, body=95, dark=20, bone=210, fat=120),
}
# Lesion grey levels per modality and finding: (fill, rim). None rim = no rim.
LESION = {
    "xray": dict(nodule=(175, None), mass=(165, None), cyst=(120, 150),
                 calcification=(252, None), abscess=(85, 185)),
    "ct": dict(nodule=(155, None), mass=(135, None), cyst=(55, 150),
               calcification=(255, None), abscess=(45, 180)),
    "mri": dict(nodule=(60, None), mass=(75, None), cyst=(235, 120),
                calcification=(8, None), abscess=(225, 55)),
    "ultrasound": dict(nodule=(55, None), mass=(165, None), cyst=(0, 150),
                       calcification=(255, None), abscess=(35, 160)),
}
# Lesion centre offsets (fractions of the image) from the body centre.
SIDE_DX = 0.21
LEVEL_DY = 0.14


def lesion_radius(size_mm: float, image_size: int) -> float:
    # Stylised scale: a 4 mm lesion must still be visible at 64 px, a 60 mm one stays inside
    # its organ. Diameter grows linearly with the stated size.
    return image_size * (0.028 + 0.0017 * size_mm)


def _ellipse(draw, cx, cy, rx, ry, fill, outline=None, width=1):
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill, outline=outline, width=width)


BODY_RADII = {"chest": (0.43, 0.38), "abdomen": (0.42, 0.33), "head": (0.34, 0.38)}


def _draw_body(draw, case: Case, S: int, cx: float, cy: float, scale: float,
               rng: np.random.Generator) -> None:
    t = TISSUE[case.modality]
    m, region = case.modality, case.region
    u = S * scale
    if m == "ultrasound":
        _draw_ultrasound_field(draw, region, t, S, cx, cy, u)
        return
    fx, fy = BODY_RADII.get(region, (0.45, 0.30))  # pelvis the default
    rx, ry = fx * u, fy * u
    if m == "ct":
        _ellipse(draw, cx, cy, rx, ry, fill=t["fat"], outline=150, width=max(1, S // 110))
        _ellipse(draw, cx, cy, rx * 0.92, ry * 0.9, fill=t["body"])
        y = cy + ry + 0.06 * S  # scanner table
        draw.arc([cx - 0.6 * S, y - 0.05 * S, cx + 0.6 * S, y + 0.2 * S], 200, 340,
                 fill=120, width=max(1, S // 75))
    elif m == "mri":
        _ellipse(draw, cx, cy, rx, ry, fill=t["fat"])
        _ellipse(draw, cx, cy, rx * 0.9, ry * 0.88, fill=t["body"])
    else:
        _ellipse(draw, cx, cy, rx, ry, fill=t["body"])
    if region == "chest":
        for side in (-1, 1):
            _ellipse(draw, cx + side * 0.2 * u, cy - 0.02 * u, 0.15 * u, 0.28 * u, fill=t["dark"])
        _ellipse(draw, cx + 0.05 * u, cy + 0.1 * u, 0.12 * u, 0.11 * u, fill=t["body"] + 20)
        if m == "xray":  # ribs
            for k in range(6):
                yy = cy - 0.28 * u + k * 0.1 * u
                for side in (-1, 1):
                    x0 = cx + side * 0.05 * u
                    draw.arc([min(x0, x0 + side * 0.4 * u), yy - 0.05 * u,
                              max(x0, x0 + side * 0.4 * u), yy + 0.06 * u],
                             180 if side < 0 else 270, 270 if side < 0 else 360,
                             fill=t["bone"] - 40, width=max(1, S // 100))
        draw.rectangle([cx - 0.025 * u, cy - 0.35 * u, cx + 0.025 * u, cy + 0.35 * u],
                       fill=t["bone"])
    elif region == "abdomen":
        _ellipse(draw, cx - 0.17 * u, cy - 0.08 * u, 0.2 * u, 0.16 * u, fill=t["body"] + 18)
        for side in (-1, 1):
            _ellipse(draw, cx + side * 0.2 * u, cy + 0.12 * u, 0.05 * u, 0.08 * u,
                     fill=t["body"] + 30)
        _ellipse(draw, cx, cy + 0.22 * u, 0.05 * u, 0.05 * u, fill=t["bone"])
    elif region == "head":
        w = max(2, S // 40)
        _ellipse(draw, cx, cy, rx, ry, fill=None, outline=t["bone"], width=w)
        for side in (-1, 1):
            _ellipse(draw, cx + side * 0.05 * u, cy - 0.02 * u, 0.035 * u, 0.1 * u,
                     fill=t["dark"] if m != "mri" else 200)
    else:  # pelvis
        for side in (-1, 1):
            draw.arc([cx + side * 0.22 * u - 0.18 * u, cy - 0.22 * u,
                      cx + side * 0.22 * u + 0.18 * u, cy + 0.22 * u],
                     190 if side < 0 else 250, 290 if side < 0 else 350,
                     fill=t["bone"], width=max(2, S // 50))
        _ellipse(draw, cx, cy + 0.05 * u, 0.1 * u, 0.08 * u, fill=t["dark"] + 10)


def _draw_ultrasound_field(draw, region: str, t: dict, S: int, cx, cy, u) -> None:
    """A sonographic field of view has no body outline: tissue fills the fan, and the region
    shows through its echo structures."""
    draw.rectangle([0, 0, S, S], fill=t["body"])
    if region == "chest":  # pleural line and rib shadows
        draw.line([0, 0.18 * S, S, 0.18 * S], fill=200, width=max(1, S // 80))
        for x in (0.25, 0.75):
            draw.rectangle([(x - 0.06) * S, 0, (x + 0.06) * S, S], fill=t["dark"])
    elif region == "abdomen":  # liver parenchyma with vessels
        _ellipse(draw, cx, cy, 0.4 * u, 0.3 * u, fill=t["body"] + 25)
        for dx, dy in ((-0.1, -0.05), (0.08, 0.1), (0.0, -0.15)):
            _ellipse(draw, cx + dx * u, cy + dy * u, 0.03 * u, 0.03 * u, fill=t["dark"])
    elif region == "head":  # midline echo and ventricles
        draw.line([cx, 0.1 * S, cx, 0.95 * S], fill=190, width=max(1, S // 90))
        for side in (-1, 1):
            _ellipse(draw, cx + side * 0.06 * u, cy, 0.03 * u, 0.09 * u, fill=t["dark"])
    else:  # pelvis: the bladder
        draw.rounded_rectangle([cx - 0.12 * u, cy - 0.3 * u, cx + 0.12 * u, cy - 0.12 * u],
                               radius=0.05 * u, fill=t["dark"])


def _lesion_centers(case: Case, S, cx, cy, scale, r, rng):
    side = 1.0 if case.laterality == "left" else -1.0  # patient's left = image right
    level = -1.0 if case.position == "upper" else 1.0
    x = cx + side * SIDE_DX * S * scale + rng.normal(0, 0.02 * S)
    y = cy + level * LEVEL_DY * S * scale + rng.normal(0, 0.02 * S)
    centers = [(x, y, r)]
    for _ in range(case.count - 1):
        angle = rng.uniform(0, 2 * np.pi)
        dist = r * rng.uniform(1.6, 2.2)
        rr = r * rng.uniform(0.55, 0.85)
        # Siblings stay on the same side and level as the first lesion.
        dx = abs(np.cos(angle) * dist) * side * 0.8
        dy = np.sin(angle) * dist * 0.6
        centers.append((x + dx, y + dy, rr))
    return centers


def _draw_lesion(draw, case: Case, x, y, r, rng):
    fill, rim = LESION[case.modality][case.finding]
    ry = r * rng.uniform(0.8, 1.2)
    if case.finding == "mass":
        k = 11
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radii = r * rng.uniform(0.75, 1.25, k)
        draw.polygon([(x + rr * np.cos(a), y + rr * np.sin(a) * ry / r)
                      for a, rr in zip(angles, radii)], fill=fill)
    elif case.finding == "calcification":
        _ellipse(draw, x, y, 0.6 * r, 0.6 * ry, fill=fill)
    elif rim is not None:
        width = max(1, int(0.25 * r)) if case.finding == "abscess" else max(1, int(0.1 * r))
        _ellipse(draw, x, y, r, ry, fill=fill, outline=rim, width=width)
    else:
        _ellipse(draw, x, y, r, ry, fill=fill)
    if case.modality == "ultrasound":
        # Acoustic signatures below the lesion: enhancement behind fluid, shadow behind calcium.
        if case.finding in ("cyst", "abscess"):
            draw.rectangle([x - 0.7 * r, y + ry, x + 0.7 * r, y + 3 * ry], fill=150)
        elif case.finding == "calcification":
            draw.rectangle([x - 0.5 * r, y + 0.6 * ry, x + 0.5 * r, y + 4 * ry], fill=8)


def _fan_mask(S: int, rng) -> Image.Image:
    mask = Image.new("L", (S, S), 0)
    apex_y = -0.25 * S + rng.normal(0, 0.02 * S)
    half = rng.uniform(33, 40)
    ImageDraw.Draw(mask).pieslice([S / 2 - 1.15 * S, apex_y - 1.15 * S + 0.1 * S,
                                   S / 2 + 1.15 * S, apex_y + 1.15 * S],
                                  90 - half, 90 + half, fill=255)
    return mask


def render_image(case: Case, rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """Draw ``case`` as a uint8 greyscale (size, size) array."""
    return render_case(case, rng, size)[0]


def lesion_box(lesions: list[tuple[float, float, float]], angle: float, S: int) -> list[float] | None:
    """The box [x0, y0, x1, y1] (fractions of the image side) around every lesion disc, after
    the image's rotation by ``angle`` degrees (counter-clockwise on screen, about the centre,
    as PIL rotates). None for a normal case."""
    if not lesions:
        return None
    t = np.deg2rad(angle)
    c = S / 2
    pts = []
    for x, y, r in lesions:
        dx, dy = x - c, y - c
        xr, yr = c + dx * np.cos(t) + dy * np.sin(t), c - dx * np.sin(t) + dy * np.cos(t)
        pts += [(xr - r, yr - r), (xr + r, yr + r)]
    pts = np.clip(np.asarray(pts), 0, S) / S
    return [float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()),
            float(pts[:, 1].max())]


def render_case(case: Case, rng: np.random.Generator,
                size: int = 224) -> tuple[np.ndarray, list[float] | None]:
    """Draw ``case``: (uint8 greyscale (size, size) array, its lesion box or None). The box
    comes from the same draws as the pixels (it adds none: the bytes do not change)."""
    S = size
    t = TISSUE[case.modality]
    img = Image.new("L", (S, S), t["bg"])
    draw = ImageDraw.Draw(img)
    cx = S / 2 + rng.normal(0, 0.025 * S)
    cy = S / 2 + rng.normal(0, 0.025 * S)
    scale = rng.uniform(0.92, 1.06)
    _draw_body(draw, case, S, cx, cy, scale, rng)
    lesions = []
    if not case.is_normal:
        r = lesion_radius(case.size_mm, S) * scale
        for x, y, rr in _lesion_centers(case, S, cx, cy, scale, r, rng):
            _draw_lesion(draw, case, x, y, rr, rng)
            lesions.append((x, y, rr))
    # Geometry jitter: nearest-neighbour rotation is 10x cheaper and the blur smooths it.
    angle = rng.normal(0, 2.5)
    img = img.rotate(angle, resample=Image.Resampling.NEAREST, fillcolor=t["bg"])
    img = img.filter(ImageFilter.BoxBlur(rng.uniform(0.5, 1.3) * S / 224))
    # Contrast / brightness / gamma jitter through one lookup table.
    gain, bias, gamma = rng.uniform(0.8, 1.2), rng.normal(0, 10), rng.uniform(0.85, 1.15)
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma * gain + bias, 0, 255)
    img = img.point(lut.astype(np.uint8).tolist())
    if case.modality == "ultrasound":
        # Multiplicative speckle at half resolution (speckle grains are larger than a pixel).
        speckle = rng.standard_exponential((S // 2 + 1, S // 2 + 1), dtype=np.float32)
        speckle = np.repeat(np.repeat(speckle, 2, 0), 2, 1)[:S, :S]
        arr = np.asarray(img, dtype=np.float32) * (0.6 + 0.4 * speckle)
        arr *= np.asarray(_fan_mask(S, rng), dtype=np.float32) * (1.0 / 255.0)
    else:
        # Triangular (sum of two uniforms) noise in int16: close to Gaussian, 3x cheaper.
        k = int(rng.integers(3, 9))
        arr = np.asarray(img, dtype=np.int16) + rng.integers(-k, k + 1, (S, S), dtype=np.int16)
        arr += rng.integers(-k, k + 1, (S, S), dtype=np.int16)
    return np.clip(arr, 0, 255).astype(np.uint8), lesion_box(lesions, angle, S)


def encode_image(arr: np.ndarray, rng: np.random.Generator, png_fraction: float = 0.15) -> tuple[bytes, str]:
    """Encode as JPEG (most of ROCOv2) or PNG; returns (bytes, file extension)."""
    img = Image.fromarray(arr, mode="L")
    buf = io.BytesIO()
    if rng.random() < png_fraction:
        img.save(buf, format="PNG", compress_level=1)
        return buf.getvalue(), "png"
    img.save(buf, format="JPEG", quality=int(rng.integers(85, 96)))
    return buf.getvalue(), "jpg"
