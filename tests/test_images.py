"""Image decoding: every PIL mode becomes RGB; broken bytes raise ImageDecodeError."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import encode, jpeg_bytes, random_bytes, truncated_jpeg
from PIL import Image

from core.data.images import ImageDecodeError, decode_image, image_to_array, resize_center_crop


def _modes():
    grey = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[:, :32, 3] = 0  # left half transparent
    pal = Image.fromarray(grey).convert("P")
    pal.info["transparency"] = 0
    deep = (np.tile(np.arange(64, dtype=np.uint16), (48, 1)) * 1000).astype(np.uint16)
    return {
        "L": encode(Image.fromarray(grey), "PNG"),
        "RGBA": encode(Image.fromarray(rgba, "RGBA"), "PNG"),
        "P": encode(pal, "PNG"),
        "I;16": encode(Image.fromarray(deep), "PNG"),
        "CMYK": encode(Image.fromarray(grey).convert("CMYK"), "JPEG"),
        "1": encode(Image.fromarray(grey).convert("1"), "PNG"),
        "LA": encode(Image.fromarray(grey).convert("LA"), "PNG"),
    }


@pytest.mark.parametrize("mode", list(_modes()))
def test_every_mode_becomes_rgb(mode):
    img = decode_image(_modes()[mode])
    assert img.mode == "RGB"
    assert img.size == (64, 48)


def test_sixteen_bit_is_stretched_not_clipped():
    arr = np.asarray(decode_image(_modes()["I;16"]))
    # 0..63000 must map to 0..255, not saturate at 255 beyond the first few columns.
    assert arr[:, 0].max() == 0 and arr[:, -1].min() == 255
    assert 100 < arr[:, 32].mean() < 160


def test_transparent_pixels_become_black():
    arr = np.asarray(decode_image(_modes()["RGBA"]))
    assert arr[:, :32].max() == 0
    assert arr[:, 40:, 0].min() == 200


@pytest.mark.parametrize("data,match", [
    (truncated_jpeg(), "undecodable"),
    (random_bytes(), "undecodable"),
    (b"", "empty"),
    (None, "missing"),
])
def test_broken_bytes_raise(data, match):
    with pytest.raises(ImageDecodeError, match=match):
        decode_image(data)


def test_resize_center_crop_and_normalise():
    img = decode_image(jpeg_bytes((200, 100)))
    assert resize_center_crop(img, 32).size == (32, 32)
    arr = image_to_array(jpeg_bytes((200, 100)), 32)
    assert arr.shape == (3, 32, 32) and arr.dtype == np.uint8  # what travels to the device
    # normalisation happens on the device, in the image encoder
    import torch

    from core.models.encoders import ImageEncoderConfig
    from core.models.encoders import ImageEncoder

    enc = ImageEncoder(ImageEncoderConfig(arch="small_cnn", image_size=32, mean=[0.5] * 3,
                                          std=[0.5] * 3, cnn_channels=[8]))
    norm = enc.normalize(torch.from_numpy(arr)[None])
    assert norm.dtype == torch.float32 and -1.0 <= norm.min() and norm.max() <= 1.0
    assert torch.allclose(norm, torch.from_numpy(arr)[None].float() / 127.5 - 1.0, atol=1e-5)
