"""rocoray core: the model library (models, losses, metrics, data transforms, retrieval).

Pure PyTorch / pyarrow / numpy. Nothing here imports ray, so every piece can be
unit-tested in milliseconds and reused outside the Ray jobs.
"""

__version__ = "0.1.0"
