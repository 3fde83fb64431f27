"""The two models, by name."""

from __future__ import annotations

from enum import StrEnum


class ModelKind(StrEnum):
    """The two models. A config's ``model.kind`` is checked against these once, at load
    (``core.config``); code compares with the members, never with strings."""

    TWO_TOWER = "two_tower"
    FUSION = "fusion"
