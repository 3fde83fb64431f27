"""Tokenizers: the offline WordPiece knows ordinary words (the transformers 5.x trap)."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import PreTrainedTokenizerFast

from core.config import load_config
from core.data.tokenizer import (check_vocabulary, load_tokenizer, resolve_tokenizer,
                                 tokenize, train_wordpiece)


def test_trained_wordpiece_knows_words_and_round_trips(tmp_path):
    captions = ["Chest X-ray showing a nodule in the left upper lung.",
                "CT of the abdomen with a cyst in the right lower quadrant."] * 5
    tok = train_wordpiece(captions, vocab_size=300)
    ids = tok("left lung nodule", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    tok.save_pretrained(str(tmp_path / "tok"))
    again = load_tokenizer(tmp_path / "tok")
    assert again("left lung nodule", add_special_tokens=False)["input_ids"] == ids
    check_vocabulary(again, ["left", "lung", "cyst"])


def test_padding_truncation_and_special_tokens(tiny_tokenizer):
    out = tokenize(tiny_tokenizer, ["left upper lung nodule", "word " * 100], max_length=16)
    assert out["input_ids"].shape == (2, 16) and out["input_ids"].dtype == np.int64
    assert out["input_ids"][0, 0] == tiny_tokenizer.cls_token_id
    assert out["attention_mask"][0].sum() < 16 and out["attention_mask"][1].sum() == 16
    assert out["input_ids"][1, -1] == tiny_tokenizer.sep_token_id


def test_vocabulary_check_catches_an_empty_vocab():
    from tokenizers import Tokenizer, models

    empty = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordPiece({"[UNK]": 0, "[PAD]": 1},
                                                    unk_token="[UNK]")),
        unk_token="[UNK]", pad_token="[PAD]")
    with pytest.raises(ValueError, match="UNK"):
        check_vocabulary(empty)


def test_resolution_order(synthetic_dir, tmp_path):
    text = load_config("tiny").model.text
    _, source = resolve_tokenizer(text, synthetic_dir)
    assert source.endswith("tokenizer")  # the one prepare saved beside the data
    import shutil
    for p in synthetic_dir.glob("train-*.parquet"):
        shutil.copy(p, tmp_path / p.name)
    tok, source = resolve_tokenizer(text, tmp_path)  # none beside the data: train one
    assert source.startswith("WordPiece trained on 256")
    check_vocabulary(tok, ["left", "right", "upper"])
    with pytest.raises(OSError, match="not-a-model"):
        text.tokenizer = "not-a-model/at-all"
        resolve_tokenizer(text, synthetic_dir)
