"""The host/device boundary, guarded on the CPU. On a GPU worker, Ray's default
``iter_torch_batches`` put EVERY column on the GPU and ``np.asarray(batch["skip"])`` raised
``TypeError: can't convert cuda:0 device type tensor to numpy``: the first H100 run crashed so.
Two stand-ins for a GPU refuse numpy conversion the same way:

- torch's ``meta`` device (it refuses numpy conversion as CUDA does), for the batch path
  itself: collate, move, count, group;
- ``CudaLike``: CPU tensors that refuse ``numpy()`` / ``__array__`` until moved with
  ``.cpu()``, so the real models (whose padding trim and token packing are data-dependent and
  cannot run on ``meta``) go through training, validation encoding and tile scoring.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.batch import Batch, collate
from core.config import load_config
from core.evaluation.reference import encode_batches, in_memory_blocks
from core.models import build_model
from core.scoring import ScoringPlan, TileWorker, local_executor
from core.training.loop import LossModule, build_optimizer, build_scheduler, train_one_epoch


def numpy_batch(n=6, seed=0, skip_row=2, vocab=300, concepts=0):
    rng = np.random.default_rng(seed)
    skip = np.zeros(n, np.int8)
    skip[skip_row] = 2  # one undecodable image
    mask = np.ones((n, 12), np.int64)
    mask[:, 8 + seed % 3:] = 0
    batch = {"pixel_values": rng.integers(0, 255, (n, 3, 64, 64), dtype=np.uint8),
             "input_ids": rng.integers(5, vocab, (n, 12)) * mask, "attention_mask": mask,
             "group": np.arange(n) + 100 * seed, "skip": skip,
             "image_id": np.array([f"img-{seed}-{i}" for i in range(n)], dtype=object),
             "caption": np.array([f"caption {i}" for i in range(n)], dtype=object)}
    if concepts:  # multi-hot concept targets: a model input (a loss target), not bookkeeping
        batch["concepts"] = (rng.random((n, concepts)) < 0.3).astype(np.uint8)
    return batch


def test_meta_device_batch_keeps_bookkeeping_on_the_host():
    batch = collate(numpy_batch()).to("meta")
    assert all(t.device.type == "meta" for t in batch.inputs.values())
    assert isinstance(batch.group, np.ndarray) and batch.group.tolist() == [0, 1, 3, 4, 5]
    assert batch.image_id.tolist()[2] == "img-0-3" and batch.skipped == {"image_undecodable": 1}
    with pytest.raises((TypeError, NotImplementedError)):
        np.asarray(batch.inputs["group"])  # what the old loop did: the meta device refuses it


def test_collate_refuses_device_tensors_in_the_bookkeeping():
    # Ray's default GPU collate hands over every column on the device: refuse it clearly.
    on_device = {k: (torch.as_tensor(v).to("meta") if v.dtype != object else v)
                 for k, v in numpy_batch().items()}
    with pytest.raises(TypeError, match="host bookkeeping must be numpy"):
        collate(on_device)


def test_meta_device_epoch_loop_never_pulls_device_tensors_to_the_host():
    class Probe(torch.nn.Module):  # data-independent, so it runs on meta
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3))

        def forward(self, pixel_values, input_ids, attention_mask, group):
            loss = (pixel_values.float().mean((0, 2, 3)) * self.w).sum() + group.float().mean()
            return loss, {"probe": loss.detach()}

    module = Probe().to("meta")
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    batches = [collate(numpy_batch(seed=s)) for s in range(3)]
    stats = train_one_epoch(module, opt, sched, batches, torch.device("meta"))
    assert stats.steps == 3 and stats.samples == 15
    assert stats.skipped == {"image_undecodable": 3}
    assert all(v.device.type == "meta" for v in stats.sums.values())  # no host sync per step


class CudaLike(torch.Tensor):
    """A CPU tensor standing in for a CUDA one: numpy conversion raises the TypeError CUDA
    raises, until the tensor is moved to the host with ``.cpu()`` / ``.to("cpu")``."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.numpy, torch.Tensor.__array__, torch.Tensor.tolist):
            raise TypeError("can't convert cuda:0 device type tensor to numpy (CudaLike)")
        out = super().__torch_function__(func, types, args, kwargs)
        is_move = func is torch.Tensor.cpu or (func is torch.Tensor.to and any(
            str(a) == "cpu" for a in list(args[1:]) + list(kwargs.values())))
        if is_move:
            return torch.utils._pytree.tree_map_only(CudaLike, lambda t: t.as_subclass(torch.Tensor), out)
        return out


@pytest.fixture
def cuda_like(monkeypatch):
    """``Batch.to(device)`` hands out CudaLike model inputs, as a GPU move would."""
    real = Batch.to

    def to(self, device, non_blocking=True):
        moved = real(self, "cpu")
        moved.inputs = {k: v.as_subclass(CudaLike) for k, v in moved.inputs.items()}
        return moved

    monkeypatch.setattr(Batch, "to", to)
    with pytest.raises(TypeError):  # the stand-in really refuses, as CUDA does
        np.asarray(collate(numpy_batch()).to("cuda").inputs["group"])


@pytest.mark.parametrize("kind", ["two_tower", "fusion"])
def test_real_models_train_validate_and_score_without_host_conversion(kind, cuda_like):
    torch.manual_seed(0)
    cfg = load_config("tiny", [f"model.kind={kind}", "model.concepts.num_concepts=5"])
    cfg.model.text.vocab_size = 300
    model = build_model(cfg.model)
    module = LossModule(model, cfg.model, concept_pos_weight=torch.full((5,), 2.0))
    opt = build_optimizer(module, cfg.train)
    sched = build_scheduler(opt, 10, 0.1)
    batches = [collate(numpy_batch(seed=s, concepts=5)) for s in range(3)]
    stats = train_one_epoch(module, opt, sched, batches, "cuda")
    assert stats.steps == 3 and np.isfinite(stats.summary()["loss"])
    assert stats.summary()["concept_loss"] > 0  # the concept head trained on device targets
    model.eval()
    enc = encode_batches(model, batches, "cuda")  # validation / the scoring job's encoders
    assert isinstance(enc["group"], np.ndarray) and len(enc["text"]) == 15
    assert enc["concept_logits"].shape == (15, 5) and enc["concepts"].shape == (15, 5)
    plan = ScoringPlan(enc["group"], enc["group"], block=8, chunk=4, k=3)
    worker = TileWorker(model, in_memory_blocks(enc["text"], enc["image"], 8), plan)
    acc = plan.run_retrieval(local_executor(worker))
    assert acc.ranks()[0].shape == (15,)
