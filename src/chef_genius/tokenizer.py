"""A tokenizer trained in memory for the offline `tiny` model.

T5-style: SentencePiece-like Unigram (or BPE) with Metaspace; like T5's SentencePiece it turns
every run of whitespace, newlines included, into one space. (The tests' byte-level BPE tokenizer,
GPT-2 and Llama 3 style, lives in tests/harness/byte_level.py.)
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

T5_SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]


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
