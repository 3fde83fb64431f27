"""BatchNorm over the global batch (``core.training.global_batchnorm``) under torch.distributed
(2 gloo processes on CPU): N workers with B/N rows compute the outputs, gradients and
running statistics of one worker with B rows; plain per-worker BatchNorm does not."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from core.models.encoders import SmallCNN
from core.training.global_batchnorm import GlobalBatchNorm, sync_batchnorm
from tests.helpers import free_port


def _model() -> nn.Module:
    from timm.layers import BatchNormAct2d

    torch.manual_seed(0)  # every rank and the reference start from the same weights
    return nn.Sequential(SmallCNN([4, 8]), nn.Conv2d(8, 8, 1),
                         BatchNormAct2d(8, act_layer=nn.SiLU), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 6), nn.BatchNorm1d(6))


def _step(model: nn.Module, x: torch.Tensor, w: torch.Tensor):
    """One training-mode forward and backward of a per-row loss: (outputs, parameter
    gradients, every BatchNorm's running mean and variance)."""
    model.train()
    out = model(x)
    (out * w).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    stats = [t.clone() for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for t in (m.running_mean, m.running_var)]
    return out.detach(), grads, stats


def _worker(rank, world, port, x, w, sizes, synced, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _model()
        if synced:
            model, count = sync_batchnorm(model)
            assert count == 6  # 4 in the CNN, timm's BatchNormAct2d, 1 on the embedding
        start = sum(sizes[:rank])
        got, grads, stats = _step(model, x[start:start + sizes[rank]], w[start:start + sizes[rank]])
        for g in grads:  # what DDP does with the gradients (a sum here: per-row losses)
            dist.all_reduce(g)
        out[rank] = (got, grads, stats)
    finally:
        dist.destroy_process_group()


def _two_workers(x, w, sizes, synced):
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(2, free_port(), x, w, sizes, synced, out), nprocs=2)
    return [out[0], out[1]]


@pytest.mark.timeout(180)
def test_two_workers_compute_what_one_worker_computes_on_the_whole_batch():
    torch.manual_seed(1)
    sizes = [6, 4]  # uneven, as batches are when bad rows are skipped
    x, w = torch.randn(10, 3, 16, 16) * 2 + 0.5, torch.randn(10, 6)
    ref_out, ref_grads, ref_stats = _step(_model(), x, w)
    ranks = _two_workers(x, w, sizes, synced=True)
    torch.testing.assert_close(torch.cat([r[0] for r in ranks]), ref_out, rtol=1e-4, atol=1e-5)
    for r in ranks:  # each rank's summed gradients and its running statistics
        for got, want in zip(r[1], ref_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)
        for got, want in zip(r[2], ref_stats, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # the counterfactual: each worker's BatchNorm on its own rows computes something else
    plain = _two_workers(x, w, sizes, synced=False)
    assert (torch.cat([r[0] for r in plain]) - ref_out).abs().max() > 1e-2


def test_only_trainable_batchnorms_are_replaced_and_nothing_else_changes():
    from timm.layers import BatchNormAct2d

    torch.manual_seed(0)
    frozen, trained = nn.BatchNorm2d(4), BatchNormAct2d(4, act_layer=nn.ReLU)
    frozen.requires_grad_(False)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), frozen, nn.Conv2d(4, 4, 3), trained)
    for bn in (frozen, trained):  # running statistics that are not the initial ones
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    x = torch.randn(5, 3, 12, 12)
    keys = list(model.state_dict())
    before_eval, before_train = model.eval()(x), copy.deepcopy(model).train()(x)
    model, count = sync_batchnorm(model)
    assert count == 1 and model[1] is frozen and isinstance(model[3], GlobalBatchNorm)
    assert list(model.state_dict()) == keys  # checkpoints load into the plain model
    # one process: the plain BatchNorm, with timm's activation still after it
    torch.testing.assert_close(model.eval()(x), before_eval)
    assert (model.eval()(x) >= 0).all() and (model.eval()(x) == 0).any()
    torch.testing.assert_close(model.train()(x), before_train)
