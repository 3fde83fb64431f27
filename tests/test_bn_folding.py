"""core.models.bn_folding: the frozen image stages run with BatchNorm folded into their
convolutions, with the same outputs, never saved, rebuilt when the weights change."""

import torch
from torch import nn

from core.config import load_config
from core.models.bn_folding import fold_batchnorm
from core.models.encoders import ImageEncoder


def frozen_encoder(preset="roco_cpu", load_weights=True) -> ImageEncoder:
    config = load_config(preset).model.image
    config.freeze_stages = -1
    return ImageEncoder(config, load_weights).eval()


def pixels(n=2, size=96):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


def original(encoder, px):
    return encoder.backbone[:len(encoder.frozen)](encoder.normalize(px))


@torch.no_grad()
def test_the_frozen_prefix_runs_folded_with_the_original_outputs_and_checkpoints_unchanged():
    encoder = frozen_encoder()  # EfficientNet-Lite0's packaged ImageNet weights
    keys = set(encoder.state_dict())
    px = pixels()
    out = encoder.frozen_prefix(px)
    folded = encoder.__dict__["_folded"][1]
    assert folded is not None
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(out, original(encoder, px), atol=1e-4, rtol=1e-4)
    assert set(encoder.state_dict()) == keys  # the copy is not part of the module tree


@torch.no_grad()
def test_the_folded_copy_follows_new_weights():
    encoder = frozen_encoder("base", load_weights=False)  # ResNet-50's Bottlenecks
    px = pixels(1, 64)
    encoder.frozen_prefix(px)
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    for k, v in state.items():
        if k.endswith("running_var"):
            v.mul_(2.0)
        elif k.endswith("running_mean"):
            v.add_(0.1)
    encoder.load_state_dict(state)  # as a checkpoint loads
    assert torch.isfinite(original(encoder, px)).all()
    torch.testing.assert_close(encoder.frozen_prefix(px), original(encoder, px),
                               atol=1e-3, rtol=1e-4)


class ActBetween(nn.Module):
    """Registers a conv and a BatchNorm back to back but runs a ReLU between them."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(torch.relu(self.conv(x)))


def test_a_pair_that_the_forward_does_not_run_back_to_back_is_left_alone():
    torch.manual_seed(0)
    stages = nn.Sequential(ActBetween()).eval()
    stages[0].bn.running_mean.normal_()
    stages[0].bn.running_var.uniform_(0.5, 2.0)
    assert fold_batchnorm(stages, torch.randn(1, 3, 8, 8)) is None
    pair = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert fold_batchnorm(pair, torch.randn(1, 3, 8, 8)) is None  # training: batch statistics
    assert fold_batchnorm(pair.eval(), torch.randn(1, 3, 8, 8)) is not None


@torch.no_grad()
def test_hooks_on_the_frozen_stages_see_the_original_layers():
    encoder = frozen_encoder()
    encoder.frozen_prefix(pixels(1, 64))  # the folded copy is made
    seen = []
    encoder.backbone[1].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    encoder.frozen_prefix(pixels(1, 64))
    assert len(seen) == 1  # a hook added later (Grad-CAM's) fires
