"""Encoder-decoder models (T5, FLAN-T5, BART): the prompt goes to the encoder, the recipe is the
decoder's target, read shifted right behind the decoder start token."""

from __future__ import annotations

import numpy as np
import torch

from chef_genius.encoding import seq2seq_ids
from chef_genius.families.padding import cache_of, padded, padded_prompts
from chef_genius.losses import IGNORE_INDEX, decoder_inputs, smoothed_cross_entropy_sums


class Seq2Seq:
    name = "seq2seq"
    exports_gguf = False  # llama.cpp and Ollama run decoder-only models only
    cache_tag = False
    lora_task = "SEQ_2_SEQ_LM"

    def auto_class(self):
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM

    def keeps_chat_template(self) -> bool:
        return False  # prompts are plain text, as FLAN-T5 was trained

    def stop_ids(self, tokenizer) -> list[int]:
        return [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]

    def encode_sources(self, tokenizer, prompts: list[str], max_source: int) -> list[list[int]]:
        if not prompts:  # the fast tokenizer fails on an empty batch
            return []
        # Cut keeping the final EOS: the encoder reads where the prompt ends.
        return [ids if len(ids) <= max_source else ids[:max_source - 1] + [ids[-1]]
                for ids in seq2seq_ids(tokenizer, prompts)]

    def encode_targets(self, tokenizer, targets: list[str], max_target: int) -> list[list[int]]:
        return [ids[:max_target] for ids in seq2seq_ids(tokenizer, targets)] if targets else []

    def collate(self, sources: list[np.ndarray], targets: list[np.ndarray], pad_id: int, source_multiple: int,
                target_multiple: int, fillers: int) -> dict[str, torch.Tensor]:
        """Prompts to the encoder, targets as labels; filler rows hold one visible pad token."""
        sources = sources + [np.array([pad_id], dtype=np.int32)] * fillers
        targets = targets + [np.zeros(0, dtype=np.int32)] * fillers
        input_ids, attention_mask = padded(sources, pad_id, source_multiple)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "labels": padded(targets, IGNORE_INDEX, target_multiple)[0]}

    def decoder_start(self, model, pad_id: int) -> int | None:
        start = getattr(getattr(model, "config", None), "decoder_start_token_id", None)
        return pad_id if start is None else start

    def target_logits(self, model, batch, pad_id, decoder_start_id):
        # The model's own loss is never computed: it would build full fp32 logits.
        labels = batch["labels"]
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=decoder_inputs(labels, pad_id, decoder_start_id)).logits
        return logits, labels

    def loss_sums(self, model, batch, eps, pad_id, decoder_start_id):
        return smoothed_cross_entropy_sums(*self.target_logits(model, batch, pad_id, decoder_start_id), eps)

    def pad_prompts(self, rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        return padded_prompts(rows, pad_id, left=False)  # the encoder reads them; the output has its own rows

    def new_token_budget(self, model, prompt_width: int, max_new_tokens: int) -> int:
        return max_new_tokens  # the decoder's positions do not hold the prompt

    # Decoding step by step on a KV cache (`chef_genius.serve.batch`): the encoder runs once, the
    # decoder from its start token; the encoder's output is the rows' context.
    takes_newcomers = False  # a batch runs until its rows end
    engine_types = ("t5",)  # tested: tiny T5 v1.0 and gated-gelu (FLAN-T5) models
    engine_gpu_types = ("t5",)  # CUDA-graph tests passed on an H200
    decodes_in_slots = False  # the engine decodes batch after batch

    def start_history(self, ids: torch.Tensor, start_id: int) -> torch.Tensor:
        return torch.full((ids.shape[0], 1), start_id, device=ids.device)

    def prefill(self, model, ids: torch.Tensor, mask: torch.Tensor, start_id: int):
        """(next-token logits, cache, the encoder mask the steps keep, context: the encoder output)."""
        encoded = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        start = torch.full((ids.shape[0], 1), start_id, device=ids.device)
        out = model(encoder_outputs=(encoded,), attention_mask=mask, decoder_input_ids=start, use_cache=True)
        return out.logits[:, -1, :], cache_of(out), mask, encoded

    def decode_step(self, model, tokens: torch.Tensor, mask: torch.Tensor, context, cache: dict):
        out = model(encoder_outputs=(context,), attention_mask=mask, decoder_input_ids=tokens[:, None],
                    use_cache=True, **cache)
        return out.logits[:, -1, :], mask

    def output_offset(self, prompt_width: int) -> int:
        return 0

    def new_tokens(self, generated: torch.Tensor, prompt_width: int) -> torch.Tensor:
        return generated[:, 1:]  # behind the decoder start token

