"""Image decoding and the resize / center-crop transform (normalisation: on the device,
``core.models.encoders.ImageEncoder.normalize``).

Radiology images come in every mode PIL knows: 8-bit greyscale (most X-rays), 16-bit
greyscale (DICOM exports), RGB, RGBA (figures with transparency), palette and CMYK (from
PDFs). ``decode_image`` turns all of them into 3-channel RGB; anything it cannot decode,
truncated files included, raises ``ImageDecodeError`` so the caller can count and skip it.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

# Truncated files must fail loudly, never be padded with grey.
Image.LOAD_TRUNCATED_IMAGES = False


class ImageDecodeError(ValueError):
    pass


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    # 16-bit / 32-bit / float greyscale: stretch the occupied range to 0..255 instead of
    # clipping at 255, which would turn most 16-bit radiographs white.
    arr = np.asarray(img, dtype=np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return Image.fromarray(((arr - lo) * scale).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparent pixels become black (the background of a radiograph)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_bit_depth_to_l(img).convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def decode_image(data: bytes | None, draft_size: int | None = None) -> Image.Image:
    """Decode encoded image bytes to an RGB PIL image.

    ``draft_size`` lets the JPEG decoder downscale by a power of two while decoding (never
    below ``draft_size``), which is several times faster for large images.
    """
    if data is None:
        raise ImageDecodeError("image bytes are missing (null)")
    if len(data) == 0:
        raise ImageDecodeError("image bytes are empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if draft_size and img.format == "JPEG":
                img.draft(img.mode, (draft_size, draft_size))
            img.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"undecodable image: {exc}") from exc
    if img.width < 1 or img.height < 1:
        raise ImageDecodeError(f"image has no pixels ({img.width}x{img.height})")
    return to_rgb(img)


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` and crop the centre ``size`` x ``size``."""
    return ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR,
                        centering=(0.5, 0.5))


def to_uint8_chw(img: Image.Image) -> np.ndarray:
    """RGB PIL image -> uint8 CHW array (normalisation happens on the model's device)."""
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def image_to_array(data: bytes | None, size: int) -> np.ndarray:
    """Encoded bytes -> model-ready uint8 (3, size, size). Raises ImageDecodeError."""
    return to_uint8_chw(resize_center_crop(decode_image(data, draft_size=size), size))
