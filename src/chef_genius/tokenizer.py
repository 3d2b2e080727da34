"""Tokenizers trained in memory, for the offline `tiny` model and for tests.

Two families matter for the recipe serialization round trip:

- T5-style: SentencePiece-like Unigram with Metaspace; like T5's SentencePiece it turns every
  run of whitespace, newlines included, into one space;
- byte-level BPE (GPT-2, Llama 3 style), which keeps every byte.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

T5_SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]
BYTE_LEVEL_SPECIAL_TOKENS = ["<|endoftext|>", "<pad>"]


def train_t5_style_tokenizer(texts: Iterable[str], vocab_size: int = 2000, alphabet: str = "",
                             algorithm: str = "unigram") -> Tokenizer:
    """Train a tokenizer that behaves like T5's SentencePiece (Metaspace, whitespace collapsed).

    Args:
        texts: training corpus.
        vocab_size: target vocabulary size.
        alphabet: characters that must be in the vocabulary even if the corpus lacks them.
        algorithm: "unigram" (what T5 uses) or "bpe". The Unigram trainer of `tokenizers` is not
            deterministic (its vocabulary changes from run to run); BPE is, so the `tiny` model
            uses BPE to make a seeded run reproducible.

    Returns:
        A `tokenizers.Tokenizer` with ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2 (T5's ids) that
        appends ``</s>`` to every encoded sequence.
    """
    if algorithm == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=T5_SPECIAL_TOKENS,
                                      initial_alphabet=sorted(set(alphabet)), show_progress=False)
    else:
        tokenizer = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=T5_SPECIAL_TOKENS, unk_token="<unk>",
            initial_alphabet=sorted(set(alphabet)), max_piece_length=12, show_progress=False,
        )
    tokenizer.normalizer = normalizers.Sequence([normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.train_from_iterator(texts, trainer=trainer)
    eos = tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
    return tokenizer


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
