"""InfoNCE under torch.distributed (2 gloo processes on CPU): negatives span the global
batch, and the gradients equal the single-process full-batch gradients."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from core.losses import InfoNCELoss
from tests.helpers import free_port


def _worker(rank, world, port, img, txt, groups, sizes, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        start = sum(sizes[:rank])
        sl = slice(start, start + sizes[rank])
        i = img[sl].clone().requires_grad_(True)
        t = txt[sl].clone().requires_grad_(True)
        g = None if groups is None else groups[sl]
        loss = InfoNCELoss()(i, t, torch.tensor(5.0), g)
        loss.backward()
        out[rank] = (loss.detach(), i.grad.clone(), t.grad.clone())
    finally:
        dist.destroy_process_group()


def _run(world, img, txt, groups, sizes):
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(world, free_port(), img, txt, groups, sizes, out), nprocs=world)
    return dict(out)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sizes,use_groups", [((4, 4), False), ((5, 3), True)])
def test_gathered_loss_and_grads_equal_full_batch(sizes, use_groups):
    torch.manual_seed(0)
    n = sum(sizes)
    img = torch.nn.functional.normalize(torch.randn(n, 6), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(n, 6), dim=-1)
    groups = torch.tensor([0, 1, 2, 2, 3, 4, 5, 6]) if use_groups else None
    out = _run(2, img, txt, groups, list(sizes))
    # Reference in one process: per-row losses over the WHOLE batch (global negatives),
    # rank k's loss = the mean over its rows. The all-gather's backward sums every rank's
    # loss gradient into the rows' owner, so each rank's embedding gradient must equal the
    # gradient of sum_k L_k (DDP then averages parameter gradients over ranks).
    ri, rt = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
    logits = 5.0 * ri @ rt.T
    target = (torch.arange(n) if groups is None else
              (groups[:, None] == groups[None, :]).float() / (groups[:, None] == groups[None, :]).float().sum(1, keepdim=True))
    ce = torch.nn.functional.cross_entropy
    per_row = 0.5 * (ce(logits, target, reduction="none") + ce(logits.T, target, reduction="none"))
    bounds = [0, sizes[0], n]
    local_ref = [per_row[bounds[k]:bounds[k + 1]].mean() for k in range(2)]
    sum(local_ref).backward()
    for r in range(2):
        assert out[r][0].item() == pytest.approx(local_ref[r].item(), rel=1e-5)
    torch.testing.assert_close(torch.cat([out[r][1] for r in range(2)]), ri.grad,
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.cat([out[r][2] for r in range(2)]), rt.grad,
                               rtol=1e-4, atol=1e-6)
    # and a rank's loss really used the other rank's rows as negatives
    local_only = InfoNCELoss()(img[:sizes[0]], txt[:sizes[0]], torch.tensor(5.0),
                               None if groups is None else groups[:sizes[0]])
    assert abs(local_only.item() - out[0][0].item()) > 1e-3
