"""Model families: what differs between an encoder-decoder model (T5, BART) and a decoder-only one
(GPT-2, Llama, SmolLM2) as chef-genius trains and runs them.

A family owns how prompts and targets become token ids, how a batch is laid out, the training
loss, the decoder start, what generation needs (prompt padding side, where new tokens begin, the
engine's decoder) and what export allows. Code that works with "a model" holds its family and
asks it; no ``if causal`` elsewhere. Another family (a Gemma-style model with its own turns, say)
is one new class with these members, added to `FAMILIES`, its name also among
`ModelConfig.architecture`'s choices (the configuration checks names before any family loads).
"""

from __future__ import annotations

from chef_genius.families.base import ModelFamily
from chef_genius.families.causal import Causal
from chef_genius.families.seq2seq import Seq2Seq

SEQ2SEQ, CAUSAL = Seq2Seq(), Causal()
FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (SEQ2SEQ, CAUSAL)}

__all__ = ["CAUSAL", "FAMILIES", "SEQ2SEQ", "ModelFamily", "family_of"]


def family_of(model_config, architecture: str = "auto") -> ModelFamily:
    """The family of a Transformers model config, or the one ``architecture`` names
    (`config.ModelConfig.architecture`: "auto", "seq2seq" or "causal")."""
    if architecture != "auto":
        return FAMILIES[architecture]
    return SEQ2SEQ if getattr(model_config, "is_encoder_decoder", False) else CAUSAL
