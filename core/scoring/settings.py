"""What a scoring run is asked for, in one typed object with one default each.

``ScoringSettings`` (k, rerank k, alpha, tile block / chunk, precision) is built once where a
command line is read (``rocoray score``, ``evaluate``, ``demo``, ``serve``), checked there,
and handed whole to every job, the analyses and case search. ``Method`` names the three
ways of scoring a gallery; ``core.models.config.ModelKind`` the two models they use.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import StrEnum

from core.models.kind import ModelKind
from core.precision import PRECISIONS


class Method(StrEnum):
    """How a gallery is scored: one model alone, or retrieve-and-rerank (the two-tower's
    top ``rerank_k`` re-scored by the fusion model)."""

    TWO_TOWER = "two_tower"
    FUSION = "fusion"
    RERANK = "rerank"

    @property
    def models(self) -> tuple[ModelKind, ...]:
        """The models this method needs; the first one encodes the gallery it reports on."""
        if self is Method.RERANK:
            return (ModelKind.FUSION, ModelKind.TWO_TOWER)
        return (ModelKind(self.value),)


# Rerank's k tried on the validation split when it is chosen there (``rocoray evaluate
# --rerank-ks``, ``bench.fusion_variants``); its alpha is chosen from
# ``core.models.fusion.FUSED_SCORE_ALPHAS``.
RERANK_KS = (16, 32, 64)


class SettingsError(ValueError):
    """A scoring setting out of range (a user error: one line, exit code 2)."""


def _field(default, help: str, flag: str | None = None, **metadata):
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, **metadata})


@dataclass(frozen=True)
class ScoringSettings:
    k: int = _field(10, "top-K kept per query")
    rerank_k: int = _field(32, "rerank: first-stage candidates per query")
    alpha: float = _field(0.0, "rerank: fused score = fusion logit + alpha x two-tower cosine")
    block: int | None = _field(None, "rows per feature block = tile side (default: sized for "
                               "the device)")
    chunk: int | None = _field(None, "sub-block side inside a tile (default: sized for the "
                               "device)")
    precision: str | None = _field(None, "fp32 or bf16 autocast (default: the checkpoint's "
                                   "train.precision on GPUs and on CPUs with native bf16, "
                                   "else fp32)",
                                   choices=list(PRECISIONS))

    def __post_init__(self):
        for name in ("k", "rerank_k", "block", "chunk"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise SettingsError(f"--{name.replace('_', '-')} must be a whole number of at "
                                    f"least 1, got {value!r}")
        if not math.isfinite(self.alpha):
            raise SettingsError(f"--alpha must be a finite number, got {self.alpha!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise SettingsError(f"--precision must be one of {', '.join(PRECISIONS)}, got "
                                f"{self.precision!r}")

    def wanted(self, method: Method) -> int:
        """Items per query the method needs from the gallery: rerank's candidates, else K."""
        return max(self.k, self.rerank_k) if method is Method.RERANK else self.k

    def check(self, method: Method, rows: int, where: str) -> None:
        """The one size check of every job: the gallery (``where``, ``rows`` items) holds the
        items asked for, and rerank keeps no more than its candidates."""
        if method is Method.RERANK and self.k > self.rerank_k:
            raise SettingsError(f"--k {self.k} must not exceed --rerank-k {self.rerank_k}")
        if self.wanted(method) > rows:
            raise SettingsError(f"top-{self.wanted(method)} asked for (--k/--rerank-k), but "
                                f"{where} holds only {rows} item(s)")

    def capped(self, rows: int) -> ScoringSettings:
        """These settings on a gallery of ``rows`` items: K and rerank k at most ``rows``."""
        return self.replace(k=min(self.k, rows), rerank_k=min(self.rerank_k, rows))

    def replace(self, **changes) -> ScoringSettings:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)
