"""The gallery's cases as the search service shows them: id, caption, UMLS concepts, a JPEG
thumbnail and the original image bytes (read again for explanations), in the encoded
gallery's order."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from core.data.images import decode_image
from core.data.rocov2 import image_bytes_column, read_files

THUMBNAIL_SIDE = 192


def thumbnail(data: bytes, side: int = THUMBNAIL_SIDE) -> bytes:
    """A JPEG no larger than ``side`` on its longer edge."""
    img = decode_image(data, draft_size=side)
    img.thumbnail((side, side))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return out.getvalue()


@dataclass
class Cases:
    image_id: list[str]
    caption: list[str]
    cuis: list[list[str]]
    image: list[bytes]
    thumbnail: list[bytes]
    _position: dict = field(init=False, repr=False)

    def __post_init__(self):
        self._position = {image_id: n for n, image_id in enumerate(self.image_id)}

    def __len__(self) -> int:
        return len(self.image_id)

    def position(self, image_id: str) -> int | None:
        return self._position.get(image_id)


def read_cases(files, gallery_ids) -> Cases:
    """The rows of ``files`` (``core.data.rocov2.SplitFiles``) whose ids the encoded gallery
    holds, in the gallery's order (rows the encoder skipped are not cases; the ones it kept
    decoded, so each has a thumbnail)."""
    table = read_files(files, columns=["image_id", "caption", "image", "cui"])
    ids = [str(i) for i in table.column("image_id").to_pylist()]
    where = {i: n for n, i in enumerate(ids)}
    missing = [i for i in gallery_ids if i not in where]
    if missing:
        raise ValueError(f"{len(missing)} gallery id(s) are not in the data (first: "
                         f"{missing[0]!r}): the encoding is not of this split")
    rows = [where[i] for i in gallery_ids]
    captions = table.column("caption").to_pylist()
    cuis = table.column("cui").to_pylist()  # an empty list where the data has none
    column = image_bytes_column(table)
    images = [column[r] for r in rows]
    return Cases([ids[r] for r in rows], [captions[r] or "" for r in rows],
                 [list(cuis[r] or []) for r in rows], images, [thumbnail(b) for b in images])
