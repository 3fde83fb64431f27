"""BatchNorm over the global batch, so that N training workers with B/N rows each compute what
one worker with B rows computes.

Under DDP every worker's BatchNorm normalises its own B/N rows: a CNN tower trained on 2
workers x 24 rows sees other statistics (noisier, and the same for a worker's own positives
and its local negatives) than 1 worker x 48, although the contrastive loss's negatives span
the global batch (``core.distributed.gather_with_grad``). ``sync_batchnorm(model)`` swaps
every trainable BatchNorm for a ``GlobalBatchNorm``: in training mode its mean and variance
are over every rank's rows (per-channel sums all-reduced WITH gradient, so each rank's
gradient also flows through the other ranks' statistics), its running statistics move by
the global ones. torch's ``nn.SyncBatchNorm`` does this on GPUs only; this one runs wherever
the process group runs (gloo on CPUs, NCCL on GPUs). Frozen BatchNorms (eval mode, their
ImageNet statistics, folded into convolutions for the frozen store) are left as they are.
Parameter and buffer names do not change: checkpoints load into the plain model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from core.distributed import world


class GlobalBatchNorm(_BatchNorm):
    """``nn.BatchNorm1d/2d/3d`` whose training-mode statistics are over all ranks' rows. With
    one rank (or in eval mode) it is the plain BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training or world()[1] == 1:
            y = super().forward(x)
            for after in self.children():
                y = after(y)
            return y
        import torch.distributed.nn.functional as dnn

        c, dims = x.shape[1], [0, *range(2, x.dim())]
        x32 = x.float()
        local = torch.cat([x32.sum(dims), (x32 * x32).sum(dims),
                           x32.new_tensor([x.numel() // c])])
        total = dnn.all_reduce(local)  # a sum; its backward all-reduces the gradients
        n = total[-1]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0)  # biased, as BatchNorm's
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach() * n / (n - 1).clamp_min(1))
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x32 - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        y = y.to(x.dtype)
        for after in self.children():  # timm's BatchNormAct2d: its dropout, its activation
            y = after(y)
        return y

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                    else self.momentum)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), momentum)


def _convertible(module: nn.Module) -> bool:
    """A trainable (affine, its weight trains) plain BatchNorm or timm's BatchNormAct2d
    (whose children, dropout then activation, run after the normalisation)."""
    plain = type(module) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    timm_act = type(module).__name__ == "BatchNormAct2d" and \
        [name for name, _ in module.named_children()] == ["drop", "act"]
    return (plain or timm_act) and module.affine and module.weight.requires_grad


def sync_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """``model`` with every trainable BatchNorm (an affine one whose weight trains) replaced
    in place by a ``GlobalBatchNorm`` holding the same parameters and statistics; returns
    (model, how many were replaced). Frozen BatchNorms are kept."""
    count = 0
    for name, child in list(model.named_children()):
        if _convertible(child):
            synced = GlobalBatchNorm(child.num_features, child.eps, child.momentum,
                                     child.affine, child.track_running_stats,
                                     device=_device_of(child))
            for after_name, after in child.named_children():
                synced.add_module(after_name, after)
            synced.load_state_dict(child.state_dict())
            synced.bias.requires_grad_(child.bias.requires_grad)
            synced.train(child.training)
            setattr(model, name, synced)
            count += 1
        else:
            count += sync_batchnorm(child)[1]
    return model, count


def _device_of(module: nn.Module):
    tensors = list(module.parameters()) + list(module.buffers())
    return tensors[0].device if tensors else None
