"""torch.distributed helpers: all-gather WITH gradient across ranks (global negatives), and
the small collectives the training loop needs (agreeing on a skip, gathering validation
features).

Ray Train sets up the process group; nothing here knows about Ray. With no process group
(a single worker, or tests) every function is the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sizes(n: int, device) -> list[int]:
    size = torch.tensor([n], device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``x`` from every rank along dim 0, keeping the autograd graph (each
    rank's gradient flows back to the rank that produced the rows). Ranks may hold
    different numbers of rows (skipped bad rows make batches uneven): rows are padded for
    the collective and trimmed after. Returns (gathered, offset of this rank's rows)."""
    rank, size = world()
    if size == 1:
        return x, 0
    import torch.distributed.nn.functional as dnn

    sizes = _sizes(x.shape[0], x.device)
    pad = max(sizes) - x.shape[0]
    padded = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))]) if pad else x
    parts = dnn.all_gather(padded)
    out = torch.cat([p[:n] for p, n in zip(parts, sizes)])
    return out, sum(sizes[:rank])


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Like gather_with_grad, for tensors that need no gradient (group ids, indices)."""
    _, size = world()
    if size == 1:
        return x
    sizes = _sizes(x.shape[0], x.device)
    pad = max(sizes) - x.shape[0]
    padded = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))]) if pad else x.contiguous()
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


def all_ranks_agree(flag: bool, device) -> bool:
    """True if ``flag`` holds on every rank (collectives must stay in step). Free with one
    rank; a one-element all-reduce otherwise."""
    _, size = world()
    if size == 1:
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=device)
    dist.all_reduce(t)
    return t.item() == 0.0


def gather_objects(obj):
    """Every rank's picklable ``obj`` (None where a rank has nothing), on every rank."""
    _, size = world()
    if size == 1:
        return [obj]
    parts = [None] * size
    dist.all_gather_object(parts, obj)
    return parts


def summed_counts(counts: dict[str, float]) -> dict[str, float]:
    """``counts`` (name -> number) summed over every rank, on every rank; with
    ``seconds`` the slowest rank's (the epoch ends when the last rank does)."""
    parts = gather_objects(dict(counts))
    out = {k: sum(p.get(k, 0) for p in parts) for k in {k for p in parts for k in p}}
    if "seconds" in counts:
        out["seconds"] = max(p.get("seconds", 0.0) for p in parts)
    return out
