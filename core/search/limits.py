"""What a search request may ask for, checked before any model runs. Every violation is a
``SearchError`` carrying its HTTP status (4xx) and one clear message."""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass

from PIL import Image

from core.data.images import ImageDecodeError, decode_image


class SearchError(ValueError):
    """A request the service refuses: ``status`` (400, 404, 413, 415, 422) and one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_query_chars: int = 1000  # a caption-length query; longer text is refused
    max_upload_bytes: int = 8 * 1024 * 1024  # the body of an image query
    max_json_bytes: int = 16 * 1024  # the body of any other request (a text query's JSON)
    max_image_pixels: int = 40_000_000  # width x height of an upload (decompression bombs)
    max_k: int = 100  # hits per response

    def as_dict(self) -> dict:
        return asdict(self)


LIMITS = Limits()


def check_query(text, limits: Limits = LIMITS) -> str:
    """The query text, stripped; empty, non-text or overlong queries are refused."""
    if not isinstance(text, str):
        raise SearchError(422, "query must be a string")
    text = " ".join(text.split())
    if not text:
        raise SearchError(422, "query is empty")
    if len(text) > limits.max_query_chars:
        raise SearchError(422, f"query is {len(text)} characters long; the limit is "
                               f"{limits.max_query_chars}")
    return text


def check_k(k, gallery_size: int, limits: Limits = LIMITS) -> int:
    """k as an int in 1..min(gallery size, max_k)."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise SearchError(422, f"k must be an integer, got {k!r}")
    top = min(gallery_size, limits.max_k)
    if k < 1 or k > top:
        raise SearchError(422, f"k must be between 1 and {top} (the gallery holds "
                               f"{gallery_size} cases), got {k}")
    return k


def check_image(data: bytes, limits: Limits = LIMITS) -> Image.Image:
    """An uploaded image as RGB: refused when empty, oversized, not an image, truncated, or
    larger than ``max_image_pixels`` (checked from the header, before decoding)."""
    if not data:
        raise SearchError(422, "the upload is empty: send the image bytes as the request body")
    if len(data) > limits.max_upload_bytes:
        raise SearchError(413, f"the upload is {len(data)} bytes; the limit is "
                               f"{limits.max_upload_bytes}")
    try:
        with warnings.catch_warnings():
            # Pillow's warning over ~89.5 M pixels stays a warning: raised as an error inside
            # Image.open it became "cannot identify image file" (415); the size check below
            # answers 413 for it, Pillow's own error (over twice that) answers 413 here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            header = Image.open(io.BytesIO(data))  # reads the header only
            width, height = header.size
    except Image.DecompressionBombError as exc:
        raise SearchError(413, f"the image is too large to decode safely ({exc}); the limit "
                               f"is {limits.max_image_pixels} pixels") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise SearchError(415, f"the upload is not an image PIL can read ({exc})") from None
    if width * height > limits.max_image_pixels:
        raise SearchError(413, f"the image is {width}x{height} pixels; the limit is "
                               f"{limits.max_image_pixels} pixels")
    try:
        return decode_image(data)
    except ImageDecodeError as exc:
        raise SearchError(422, f"the image cannot be decoded: {exc}") from None


def body_limit(path: str, limits: Limits = LIMITS) -> int:
    """The most bytes a request body to ``path`` may hold: an image upload's, else a JSON
    query's (the text route's 1,000 characters fit many times over)."""
    return limits.max_upload_bytes if path.rstrip("/").endswith("/search/image") else \
        limits.max_json_bytes
