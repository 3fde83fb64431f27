"""Caption hard negatives by swapping one attribute word (NegCLIP-style): "left upper lobe"
becomes "right upper lobe" AND "left lower lobe". A match head gets negatives that differ from
their positive in exactly one fine-grained word, which random or similarity-sampled
in-batch negatives almost never provide.

The swap works on token ids (both words must be single tokens of the vocabulary); each word
pair present in a caption gives one negative; captions without any yield none.
"""

from __future__ import annotations

import torch


def swap_pairs(tokenizer, words: list[str]) -> torch.Tensor | None:
    """(P, 2) token ids of the ``"a:b"`` word pairs that are single tokens; None if none."""
    pairs = []
    for item in words:
        a, _, b = item.partition(":")
        ids = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in (a, b)]
        if all(len(i) == 1 for i in ids) and ids[0] != ids[1]:
            pairs.append([ids[0][0], ids[1][0]])
    return torch.tensor(pairs, dtype=torch.long) if pairs else None


def swap_each_attribute(input_ids: torch.Tensor, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every single-pair swap of every row: for each word pair present in a caption, that
    caption with this pair's words swapped (a <-> b) and nothing else. Returns (swapped ids,
    the row each came from); rows without a swappable word contribute nothing."""
    pairs = pairs.to(input_ids.device)
    out, rows = [], []
    for a, b in pairs:
        is_a, is_b = input_ids == a, input_ids == b
        present = (is_a | is_b).any(1).nonzero()[:, 0]
        if len(present):
            swapped = input_ids[present].clone()
            swapped[is_a[present]] = b
            swapped[is_b[present]] = a
            out.append(swapped)
            rows.append(present)
    if not out:
        return input_ids[:0], torch.zeros(0, dtype=torch.long, device=input_ids.device)
    return torch.cat(out), torch.cat(rows)
