"""The one host/device boundary of a batch.

A preprocessed batch (numpy columns from ``core.data.preprocess.Preprocessor``) holds model
inputs AND host bookkeeping: skip reasons, caption groups, image ids, captions. Only the
model inputs may go to an accelerator; the bookkeeping stays numpy on the host, where
counting and filtering happen. (On a GPU worker, Ray's default ``iter_torch_batches`` moves
EVERY column to the device, and ``np.asarray`` on a CUDA tensor raises ``TypeError: can't
convert cuda:0 device type tensor to numpy``: the first GPU run crashed exactly so.)

    batch = collate(numpy_batch, pin_memory=True)   # host: drop + count skipped rows
    batch = batch.to(device)                        # only the model inputs move

Training, validation, the scoring job's encoders, rerank and Tune trials all go through
these two functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from core.data.preprocess import count_skips

# What the models and losses consume; everything else in a batch is host bookkeeping.
MODEL_INPUTS = ("input_ids", "attention_mask", "group")
# Model inputs that only some batches carry: the pixels (absent when the frozen image stages
# were encoded in advance: ``image_prefix``), the frozen text layers' token states
# (``text_prefix``), multi-hot concept targets (a concept head's).
OPTIONAL_INPUTS = ("pixel_values", "image_prefix", "text_prefix", "concepts")


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]  # model inputs: host tensors until .to(device)
    group: np.ndarray  # int64 caption-group ids (host)
    image_id: np.ndarray  # str (host)
    caption: np.ndarray  # str (host)
    skipped: dict[str, int] = field(default_factory=dict)  # rows dropped, by reason

    def __len__(self) -> int:
        return len(self.group)

    def to(self, device, non_blocking: bool = True) -> Batch:
        """The same batch with its model inputs on ``device``; host columns untouched."""
        device = torch.device(device)
        moved = {k: v.to(device, non_blocking=non_blocking and device.type == "cuda")
                 for k, v in self.inputs.items()}
        return replace(self, inputs=moved)

    def select(self, idx) -> Batch:
        """Rows ``idx`` (a slice or an index array) of the batch."""
        rows = torch.as_tensor(np.arange(len(self))[idx])
        return Batch(inputs={k: v[rows] for k, v in self.inputs.items()},
                     group=self.group[idx], image_id=self.image_id[idx],
                     caption=self.caption[idx], skipped=dict(self.skipped))

    @property
    def device(self) -> torch.device:
        return self.inputs["input_ids"].device


def _host(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            raise TypeError("host bookkeeping must be numpy, got a tensor on "
                            f"{value.device}: collate numpy batches, move only model inputs")
        return value.numpy()
    return np.asarray(value)


def collate(batch: dict, pin_memory: bool = False) -> Batch:
    """A numpy batch of preprocessed rows -> ``Batch``: skipped rows dropped and counted on the
    host, model inputs as (optionally pinned) CPU tensors."""
    skip = _host(batch["skip"])
    keep = np.nonzero(skip == 0)[0]
    skipped = count_skips(skip)
    full = len(keep) == len(skip)

    def rows(name):
        value = _host(batch[name]) if name in batch else np.asarray([""] * len(skip), dtype=object)
        return value if full else value[keep]

    inputs = {}
    for name in MODEL_INPUTS + tuple(n for n in OPTIONAL_INPUTS if n in batch):
        array = np.ascontiguousarray(rows(name))
        if not array.flags.writeable:  # Ray hands out read-only views of its blocks
            array = array.copy()
        t = torch.from_numpy(array)
        inputs[name] = t.pin_memory() if pin_memory and torch.cuda.is_available() else t
    return Batch(inputs=inputs, group=rows("group").astype(np.int64), image_id=rows("image_id"),
                 caption=rows("caption"), skipped=skipped)
