"""What every model family provides (`chef_genius.families`)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class ModelFamily(Protocol):
    """An encoder-decoder or decoder-only model family, as chef-genius trains and runs it."""

    name: str  # "seq2seq" or "causal": `ModelConfig.architecture`'s values
    lora_task: str  # PEFT's TaskType name
    exports_gguf: bool  # `chef-genius export --format gguf` can write it (llama.cpp, Ollama)
    # What a token cache's key records for the family (`dataset.token_cache.cache_inputs`): False
    # for seq2seq and True for causal, as caches were keyed before families; a new family, its name.
    cache_tag: bool | str

    def auto_class(self):
        """The Transformers Auto class that loads such a model."""

    def keeps_chat_template(self) -> bool:
        """Whether prompts may be rendered with the tokenizer's chat template."""

    def stop_ids(self, tokenizer) -> list[int]:
        """Token ids that end generation."""

    def encode_sources(self, tokenizer, prompts: list[str], max_source: int) -> list[list[int]]:
        """Prompt token ids, at most ``max_source`` each (`chef_genius.encoding`)."""

    def encode_targets(self, tokenizer, targets: list[str], max_target: int) -> list[list[int]]:
        """Target token ids ending with the end token, or cut to ``max_target`` without it."""

    def collate(self, sources: list[np.ndarray], targets: list[np.ndarray], pad_id: int, source_multiple: int,
                target_multiple: int, fillers: int) -> dict[str, torch.Tensor]:
        """A batch's model inputs and labels; ``fillers`` rows with nothing to learn are added."""

    def decoder_start(self, model, pad_id: int) -> int | None:
        """The decoder's first input token (None: no decoder)."""

    def loss_sums(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], eps: float, pad_id: int,
                  decoder_start_id: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward one batch: (label-smoothed loss sum, NLL sum, target tokens)."""

    def target_logits(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], pad_id: int,
                      decoder_start_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, labels) aligned position by position, for per-token log-likelihoods."""

    def pad_prompts(self, rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts for generation as (ids, attention mask), padded on the side the model needs."""

    def new_token_budget(self, model, prompt_width: int, max_new_tokens: int) -> int:
        """The tokens a recipe may have after a prompt ``prompt_width`` wide."""

    takes_newcomers: bool  # rows may join a batch being decoded
    # The generation engine (`chef_genius.generation`): the model types its decoder for the family
    # was proven on, those among them proven on a GPU too, and whether it decodes in slots (a fixed number of rows
    # sharing one KV cache, freed rows refilled: the engine's causal decoder and serve's slot loop).
    engine_types: tuple[str, ...]
    engine_gpu_types: tuple[str, ...]
    decodes_in_slots: bool

    def start_history(self, ids: torch.Tensor, start_id: int) -> torch.Tensor:
        """The tokens the decoding rules see before the first generated one."""

    def prefill(self, model, ids: torch.Tensor, mask: torch.Tensor, start_id: int):
        """Run the prompts: (next-token logits, KV cache, attention mask, context for the steps)."""

    def decode_step(self, model, tokens: torch.Tensor, mask: torch.Tensor, context, cache: dict):
        """One token per row through the cache (``cache``: its keyword): (next logits, mask)."""

    def output_offset(self, prompt_width: int) -> int:
        """Where the generated tokens start in the ids ``generate``'s logits processors see."""

    def new_tokens(self, generated: torch.Tensor, prompt_width: int) -> torch.Tensor:
        """The generated part of ``model.generate``'s output."""
