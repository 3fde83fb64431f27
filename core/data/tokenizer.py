"""Caption tokenizers: a Hugging Face tokenizer by name or path, or a WordPiece vocabulary
trained offline on the training captions with ``tokenizers``.

transformers 5.x trap: ``BertTokenizerFast(vocab_file=...)`` silently ignores the file and
leaves a 5-token vocabulary (every word becomes [UNK]). We always build the fast tokenizer
from a ``tokenizers.Tokenizer`` object (``tokenizer_object=``) or a saved ``tokenizer.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import numpy as np

from core.data.captions import clean_caption

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOKENIZER_DIRNAME = "tokenizer"


def train_wordpiece(captions: Iterable[str], vocab_size: int = 8000, max_length: int = 64,
                    lowercase: bool = True):
    """Train a BERT-style WordPiece tokenizer on ``captions`` (offline, a second for 60k)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = WordPieceTrainer(vocab_size=vocab_size, min_frequency=1,
                               special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator((c for c in captions if c), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=max_length)


def load_tokenizer(name_or_path: str | Path):
    """A tokenizer saved with ``save_pretrained`` (local dir) or a hub name (needs network)."""
    from transformers import AutoTokenizer

    path = Path(name_or_path)
    if path.exists():
        if not (path / "tokenizer.json").exists() and not (path / "vocab.txt").exists():
            raise FileNotFoundError(f"no tokenizer.json or vocab.txt in {path}")
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    try:
        return AutoTokenizer.from_pretrained(str(name_or_path))
    except OSError as exc:
        raise OSError(f"cannot load tokenizer {str(name_or_path)!r}: not a local directory and "
                      f"not reachable on the Hugging Face hub ({exc})") from exc


def check_vocabulary(tokenizer, words: Iterable[str] = ("the", "left", "chest")) -> None:
    """Fail if ordinary words map to [UNK]: the symptom of a tokenizer built without its vocab."""
    unk = tokenizer.unk_token_id
    bad = [w for w in words if unk in tokenizer(w, add_special_tokens=False)["input_ids"]]
    if bad or len(tokenizer) <= len(SPECIAL_TOKENS):
        raise ValueError(f"tokenizer maps ordinary words to [UNK] ({bad}); vocab size "
                         f"{len(tokenizer)}: it was probably built without its vocabulary")


def tokenize(tokenizer, captions: list[str], max_length: int) -> dict[str, np.ndarray]:
    """Pad/truncate to ``max_length``: input_ids and attention_mask, int64 (N, max_length)."""
    enc = tokenizer(captions, padding="max_length", truncation=True, max_length=max_length,
                    return_attention_mask=True, return_token_type_ids=False)
    return {
        "input_ids": np.asarray(enc["input_ids"], dtype=np.int64).reshape(-1, max_length),
        "attention_mask": np.asarray(enc["attention_mask"], dtype=np.int64).reshape(-1, max_length),
    }


def resolve_tokenizer(text_config, data_path, train_split: str = "train",
                      storage_options: dict | None = None):
    """The tokenizer a run uses, in this order:
    1. ``text_config.tokenizer`` (a local path or a hub name), when set;
    2. the pretrained text model's own (``text_config.name_or_path``), when set: its
       embeddings only make sense with its vocabulary;
    3. ``<data_path>/tokenizer`` (written by ``rocoray prepare``), when it exists;
    4. a WordPiece vocabulary trained now on the training captions.
    Returns (tokenizer, a description of where it came from)."""
    if text_config.tokenizer:
        return load_tokenizer(text_config.tokenizer), str(text_config.tokenizer)
    if text_config.name_or_path:
        from core.models.pretrained import text_model_path

        tokenizer = load_tokenizer(text_model_path(text_config.name_or_path))
        return tokenizer, f"{text_config.name_or_path}'s own tokenizer"
    if isinstance(data_path, (str, Path)):
        local = Path(str(data_path)) / TOKENIZER_DIRNAME
        if (local / "tokenizer.json").exists():
            return load_tokenizer(local), str(local)
    from core.data.rocov2 import read_split

    table = read_split(data_path, train_split, columns=["caption"],
                       storage_options=storage_options)
    captions = [c for c in (clean_caption(t)[0] for t in table.column("caption").to_pylist()) if c]
    tok = train_wordpiece(captions, vocab_size=text_config.trained_vocab_size,
                          max_length=text_config.max_length)
    check_vocabulary(tok, words=captions[0].split()[:3] if captions else ("the",))
    return tok, f"WordPiece trained on {len(captions)} {train_split} captions"
