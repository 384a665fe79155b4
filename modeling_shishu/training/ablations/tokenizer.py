"""The study's tokenizer: a small byte-level BPE trained on the Shakespeare train split, and the bytes each
token stands for (for bits per byte)."""

import logging
from pathlib import Path

import torch

from ...io_utils import atomic_directory


logger = logging.getLogger(__name__)


def train_tokenizer(vocab_size: int, out_dir: Path, texts: list[str]) -> Path:
    """A byte-level BPE tokenizer with one special token (`<|endoftext|>`: BOS, EOS and padding), saved
    as a transformers tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = "<|endoftext|>"
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[special],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=special, eos_token=special, pad_token=special
    )
    with atomic_directory(out_dir, overwrite=True) as tmp:
        tokenizer.save_pretrained(tmp)
    return out_dir


def shakespeare_tokenizer(vocab_size: int) -> Path:
    """The study tokenizer, trained once on the Shakespeare TRAIN split and cached."""
    from ... import assets

    folder = assets.cache_dir() / "tokenizers" / f"shakespeare-train-bpe-{vocab_size}"
    if (folder / "tokenizer.json").is_file():
        return folder
    logger.info("training a %d-token byte-level BPE on the Shakespeare train split", vocab_size)
    return train_tokenizer(vocab_size, folder, assets.shakespeare_texts("train"))


def token_byte_lengths(tokenizer) -> torch.Tensor:
    """UTF-8 bytes each token id stands for (0 for special tokens). In a byte-level BPE every character
    of a token's string is exactly one byte."""
    from tokenizers import pre_tokenizers

    if not isinstance(tokenizer.backend_tokenizer.pre_tokenizer, pre_tokenizers.ByteLevel):
        raise ValueError("bits per byte needs a byte-level BPE tokenizer")
    special = set(tokenizer.all_special_ids)
    lengths = torch.zeros(len(tokenizer), dtype=torch.int64)
    for token_id in range(len(tokenizer)):
        if token_id not in special:
            lengths[token_id] = len(tokenizer.convert_ids_to_tokens(token_id))
    return lengths
