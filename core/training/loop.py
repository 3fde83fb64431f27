"""What one optimisation step computes, for either model, in plain PyTorch.

``LossModule`` wraps a model with its objective so that the whole step is one ``forward``:
Ray Train's ``prepare_model`` (DDP) wraps it, and DDP's gradient synchronisation sees every
parameter. ``train_one_epoch`` is the epoch loop. The Ray training loop, the overfit tests
and the benchmarks all use them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from core.batch import Batch
from core.config import TrainConfig
from core.models.config import ModelConfig
from core.data.preprocess import merge_counts
from core.distributed import all_ranks_agree
from core.losses import ConceptLoss, InfoNCELoss, MatchLoss, concept_overlap
from core.losses.swap import swap_each_attribute
from core.models import masking
from core.models.encoders import trim_padding
from core.precision import autocast
from core.models.kind import ModelKind


class LossModule(nn.Module):
    """``swap``: (P, 2) token ids of attribute word pairs (``core.losses.swap``): the fusion
    match head also learns from captions with one of them swapped. ``concept_pos_weight``:
    the concept loss's positive weights (``core.concepts.vocabulary.ConceptVocabulary.pos_weight``);
    with a concept head and ``concepts`` targets in the batch, ``model.concepts.weight`` x
    the concept loss is added to the objective."""

    def __init__(self, model: nn.Module, config: ModelConfig, swap: torch.Tensor | None = None,
                 concept_pos_weight: torch.Tensor | None = None, mask_token_id: int | None = None,
                 mask_seed: int = 0):
        super().__init__()
        self.mcr = config.mcr
        if self.mcr.mode != "off" and config.kind == ModelKind.TWO_TOWER and mask_token_id is None:
            raise ValueError("model.mcr.mode needs the tokenizer's [MASK] token id")
        self.mask_token_id, self.mask_seed = mask_token_id, mask_seed
        self.mask_step = 0  # masks are drawn from (mask_seed, step): reproducible per step
        self.concept_weight = config.concepts.weight
        self.concept_loss = ConceptLoss(concept_pos_weight, config.concepts.focal_gamma)
        self.model = model
        self.kind = config.kind
        self.infonce = InfoNCELoss()
        self.match = MatchLoss(config.fusion.negatives_per_positive, config.fusion.negative_mode,
                               config.fusion.temperature)
        self.contrastive_weight = config.fusion.contrastive_weight
        self.soft_labels = config.fusion.concept_soft_labels
        self.register_buffer("swap", swap, persistent=False)

    def forward(self, pixel_values=None, input_ids=None, attention_mask=None, group=None,
                concepts=None, image_prefix=None, text_prefix=None):
        """(loss, {name: float tensor}) for one batch. ``image_prefix`` / ``text_prefix``:
        the frozen encoder layers' outputs, encoded once before training, in place of the
        pixels (then None) / of the first layers' work."""
        if self.kind == ModelKind.TWO_TOWER:
            loss, stats, concept_logits = self._two_tower(pixel_values, input_ids,
                                                          attention_mask, group, image_prefix,
                                                          text_prefix)
        else:
            image, concept_logits = self.model.encode_image_with_concepts(pixel_values,
                                                                          image_prefix)
            loss, stats = self._fusion(image, input_ids, attention_mask, group, text_prefix,
                                       concepts)
        if concept_logits is not None and concepts is not None and self.concept_weight > 0:
            concept = self.concept_loss(concept_logits, concepts)
            loss = loss + self.concept_weight * concept
            stats["concept_loss"] = concept.detach()
        return loss, stats

    def _two_tower(self, pixel_values, input_ids, attention_mask, group, image_prefix=None,
                   text_prefix=None):
        """InfoNCE, and with MCR the masked reconstruction losses; returns (loss, stats,
        concept logits)."""
        m = self.model
        scale = m.scale()
        stats = {"logit_scale": scale.detach()}
        head = m.concept_head
        if self.mcr.mode == "off":
            x = None if image_prefix is not None else m.image_encoder.normalize(pixel_values)
            image, _, pooled = m.image_features(x, image_prefix)
            text = m.text_features(input_ids, attention_mask, text_prefix)[0]
            loss = self.infonce(image, text, scale, group)
            return loss, stats, head(pooled) if head is not None else None
        if image_prefix is not None or text_prefix is not None:
            raise ValueError("masked contrastive reconstruction (model.mcr.mode) masks the "
                             "inputs: it cannot train on frozen features encoded in advance")
        x = m.image_encoder.normalize(pixel_values)
        ids, mask = trim_padding(input_ids, attention_mask)
        gen = masking.generator(self.mask_seed, self.mask_step, x.device)
        self.mask_step += 1
        grid = m.image_encoder.grid
        cells = masking.mask_cells(len(x), grid, self.mcr.image_mask_ratio, gen, x.device)
        masked_ids, chosen = masking.mask_tokens(ids, mask, self.mcr.text_mask_ratio,
                                                 self.mask_token_id, gen)
        image_m, patches_m, pooled = m.image_features(masking.apply_cells(x, cells, grid))
        text_m, tokens_m, _ = m.text_features(masked_ids, mask)
        if self.mcr.mode == "masked_single":  # the masked inputs are the only inputs
            image, text = image_m, text_m
        else:  # dual_stream: unmasked inputs for the contrastive loss
            image, _, pooled = m.image_features(x)
            text = m.text_features(ids, mask)[0]
        contrastive = self.infonce(image, text, scale, group)
        pred = m.pixel_decoder(patches_m)
        target = masking.cell_targets(x, grid)
        l_img = ((pred.float() - target.float()) ** 2).mean(-1)[cells].mean()
        l_txt = F.cross_entropy(m.mlm_logits(tokens_m[chosen]).float(), ids[chosen])
        loss = contrastive + self.mcr.lambda_img * l_img + self.mcr.lambda_txt * l_txt
        stats.update(contrastive_loss=contrastive.detach(), image_recon_loss=l_img.detach(),
                     text_recon_loss=l_txt.detach())
        return loss, stats, head(pooled) if head is not None else None

    def _fusion(self, image, input_ids, attention_mask, group, text_prefix=None, concepts=None):
        m = self.model
        ids, mask = trim_padding(input_ids, attention_mask)
        text = m.encode_text(ids, mask, None if text_prefix is None
                             else text_prefix[:, :ids.shape[1]])
        ti, ii, labels = self.match.pairs(text.embed, image.embed, group)
        logits = m.score_pairs(text, image, ti, ii)
        stats = {"match_acc": ((logits > 0).float() == labels).float().mean().detach()}
        swapped_logits = None
        if self.swap is not None:
            swapped, rows = swap_each_attribute(ids, self.swap)
            if len(rows):
                swapped_logits = m.score_pairs(m.encode_text(swapped, mask[rows]), image,
                                               image_index=rows)
                stats["swap_acc"] = (swapped_logits <= 0).float().mean().detach()
        loss = self.match(logits, labels, swapped_logits, self._soft_targets(labels, concepts,
                                                                             ti, ii))
        stats["match_loss"] = loss.detach()
        if self.contrastive_weight > 0:
            itc = self.infonce(image.embed, text.embed, m.itc_scale(), group)
            loss = loss + self.contrastive_weight * itc
            stats["itc_loss"] = itc.detach()
        return loss, stats

    def _soft_targets(self, labels, concepts, text_index, image_index):
        """The match targets with concept soft labels for the negatives, or None (0 / 1)."""
        if self.soft_labels <= 0:
            return None
        if concepts is None:
            raise ValueError("model.fusion.concept_soft_labels needs concept ids in the batch "
                             "(a concept vocabulary: model.concepts.weight > 0)")
        overlap = concept_overlap(concepts, text_index, image_index)
        return torch.where(labels > 0.5, labels, self.soft_labels * overlap.to(labels.dtype))


ENCODERS = ("image_encoder.", "text_encoder.")


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms, embeddings' positions and the temperature.
    Pretrained encoders train at ``train.encoder_lr`` (when set), the new heads at
    ``train.lr``; frozen parameters are left out."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        bare = name.removeprefix("module.").removeprefix("model.")
        encoder = config.encoder_lr is not None and bare.startswith(ENCODERS)
        no_decay = (p.ndim < 2 or "logit_scale" in name or "image_pos" in name
                    or "norm" in name.lower())
        groups.setdefault((encoder, no_decay), []).append(p)
    return torch.optim.AdamW(
        [{"params": params, "weight_decay": 0.0 if no_decay else config.weight_decay,
          "lr": config.encoder_lr if encoder else config.lr}
         for (encoder, no_decay), params in sorted(groups.items())], lr=config.lr)


def steps_per_epoch(rows: int, batch_size: int, workers: int) -> int:
    """Optimizer steps in one epoch of ``rows`` split over ``workers``, each at ``batch_size``."""
    return max(1, math.ceil(rows / (batch_size * workers)))


def build_scheduler(optimizer, total_steps: int, warmup_fraction: float):
    """Linear warm-up then cosine decay to 0, stepped once per optimizer step."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class EpochStats:
    """What one epoch did. Sums stay on the device (no host sync per step); ``summary``
    reads them once."""

    steps: int = 0
    samples: int = 0
    seconds: float = 0.0
    skipped: dict = field(default_factory=dict)
    sums: dict = field(default_factory=dict)  # name -> device tensor, summed over steps

    def summary(self) -> dict[str, float]:
        out = {name: float(total) / max(self.steps, 1) for name, total in self.sums.items()}
        out["samples_per_s"] = self.samples / max(self.seconds, 1e-9)
        return out


def train_step(loss_module, optimizer, scheduler, batch: Batch, precision: str,
               grad_clip: float) -> tuple[torch.Tensor, dict]:
    """One optimisation step on a batch already on its device; returns (loss, stats),
    both detached device tensors."""
    with autocast(batch.device, precision):
        loss, stats = loss_module(**batch.inputs)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(loss_module.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    return loss.detach(), stats


def train_one_epoch(loss_module, optimizer, scheduler, batches: Iterable[Batch], device,
                    precision: str = "fp32", grad_clip: float = 1.0,
                    on_step: Callable[[int, torch.Tensor], None] | None = None) -> EpochStats:
    """Train over ``batches`` (host ``Batch``es, see ``core.batch``): only model inputs move
    to ``device``. A batch left with fewer than 2 usable rows (a contrastive step needs 2)
    is skipped, on every rank together."""
    loss_module.train()
    stats = EpochStats()
    t0 = time.perf_counter()
    for batch in batches:
        stats.skipped = merge_counts(stats.skipped, batch.skipped)
        if not all_ranks_agree(len(batch) >= 2, device):
            continue
        loss, parts = train_step(loss_module, optimizer, scheduler, batch.to(device),
                                 precision, grad_clip)
        stats.steps += 1
        stats.samples += len(batch)
        for name, value in {"loss": loss, **parts}.items():
            value = value.detach().float()
            stats.sums[name] = stats.sums[name] + value if name in stats.sums else value
        if on_step is not None:
            on_step(stats.steps, loss)
    stats.seconds = time.perf_counter() - t0
    return stats
