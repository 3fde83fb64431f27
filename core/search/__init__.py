"""Case search over trained rocoray models: text -> images and image -> captions, two-tower
first stage with an optional fusion rerank, explanations of one hit. Pure torch/numpy; the
Ray Serve application that exposes it over HTTP is ``ray_jobs.serve``."""

from core.search.cases import Cases, read_cases
from core.search.index import CaseIndex, Hit
from core.search.limits import LIMITS, SearchError, check_image, check_k, check_query

__all__ = ["CaseIndex", "Cases", "Hit", "LIMITS", "SearchError", "check_image", "check_k",
           "check_query", "read_cases"]
