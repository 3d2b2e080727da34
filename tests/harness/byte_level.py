"""A byte-level BPE tokenizer (GPT-2, Llama 3 style) trained in memory, for the tests: unlike the
T5-style tokenizer of `chef_genius.tokenizer` it keeps every byte, so any text round-trips."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

BYTE_LEVEL_SPECIAL_TOKENS = ["<|endoftext|>", "<pad>"]


def train_byte_level_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> Tokenizer:
    """Train a byte-level BPE tokenizer (GPT-2 style): any text encodes and decodes exactly."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=BYTE_LEVEL_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer
