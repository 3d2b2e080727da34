"""Decoder-only models (GPT-2, Llama, SmolLM2): prompt and recipe are one sequence; the loss is
on the recipe's tokens only (the prompt's labels are -100), and logits at position i predict
token i + 1. With a chat template the prompt is the user's turn and the recipe the assistant's,
ending with the template's end of turn (`chef_genius.encoding`)."""

from __future__ import annotations

import numpy as np
import torch

from chef_genius.encoding import end_of_turn_id, has_chat_template, prompt_tail_tokens, render_user, token_ids
from chef_genius.families.padding import cache_of, padded, padded_prompts
from chef_genius.generation.engine import position_limit
from chef_genius.losses import IGNORE_INDEX, smoothed_cross_entropy_sums


class Causal:
    name = "causal"
    exports_gguf = True  # llama.cpp and Ollama run decoder-only models
    cache_tag = True
    lora_task = "CAUSAL_LM"

    def auto_class(self):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def keeps_chat_template(self) -> bool:
        return True

    def stop_ids(self, tokenizer) -> list[int]:
        """The end of turn and EOS (one id when they agree)."""
        ids = [end_of_turn_id(tokenizer)]
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
            ids.append(tokenizer.eos_token_id)
        return ids

    def encode_sources(self, tokenizer, prompts: list[str], max_source: int) -> list[list[int]]:
        if not prompts:  # the fast tokenizer fails on an empty batch
            return []
        if has_chat_template(tokenizer):
            encoded = token_ids(tokenizer, [render_user(tokenizer, p) for p in prompts], add_special_tokens=False)
            # A long prompt keeps the template's tail (the assistant turn's opening) whole.
            tail = min(prompt_tail_tokens(tokenizer), max_source - 1) if any(len(i) > max_source for i in encoded) \
                else 0
            return [ids if len(ids) <= max_source else ids[:max_source - tail] + ids[len(ids) - tail:]
                    for ids in encoded]
        eos = tokenizer.eos_token_id
        encoded = token_ids(tokenizer, [p + "\n" for p in prompts], add_special_tokens=True)
        # Some causal tokenizers append EOS to every text: a prompt must not end the sequence.
        return [(ids[:-1] if ids and ids[-1] == eos else ids)[:max_source] for ids in encoded]

    def encode_targets(self, tokenizer, targets: list[str], max_target: int) -> list[list[int]]:
        if not targets:
            return []
        end = end_of_turn_id(tokenizer)
        encoded = token_ids(tokenizer, targets, add_special_tokens=False)
        return [ids + [end] if len(ids) < max_target else ids[:max_target] for ids in encoded]

    def collate(self, sources: list[np.ndarray], targets: list[np.ndarray], pad_id: int, source_multiple: int,
                target_multiple: int, fillers: int) -> dict[str, torch.Tensor]:
        """Prompt and target as one row, the prompt's labels -100; widths to ``target_multiple``."""
        rows = [np.concatenate([s, t]) for s, t in zip(sources, targets, strict=True)]
        labels = [np.concatenate([np.full(len(s), IGNORE_INDEX, dtype=np.int32), t])
                  for s, t in zip(sources, targets, strict=True)]
        rows += [np.array([pad_id], dtype=np.int32)] * fillers
        labels += [np.array([IGNORE_INDEX], dtype=np.int32)] * fillers
        input_ids, attention_mask = padded(rows, pad_id, target_multiple)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "labels": padded(labels, IGNORE_INDEX, target_multiple)[0]}

    def decoder_start(self, model, pad_id: int) -> int | None:
        return None

    def target_logits(self, model, batch, pad_id, decoder_start_id):
        # No KV cache: a training forward needs none, and building one inside compiled blocks
        # recompiles them as the cache fills (torch.compile's recompile limit was hit on an H200).
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        return logits[:, :-1], batch["labels"][:, 1:]

    def loss_sums(self, model, batch, eps, pad_id, decoder_start_id):
        return smoothed_cross_entropy_sums(*self.target_logits(model, batch, pad_id, decoder_start_id), eps)

    def pad_prompts(self, rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        return padded_prompts(rows, pad_id, left=True)  # prompt and generated tokens share one row

    def new_token_budget(self, model, prompt_width: int, max_new_tokens: int) -> int:
        """No further than the model's position embeddings reach, the prompt included."""
        limit = position_limit(model)
        return max(1, min(max_new_tokens, limit - prompt_width)) if limit else max_new_tokens

    # Decoding step by step on a KV cache (`chef_genius.serve.batch`): rows are left-padded prompts;
    # position ids come from the attention mask, so each row counts its own positions.
    takes_newcomers = True  # rows may join a running batch (their cache padded and stacked on it)
    engine_types = ("llama", "gemma3_text")  # tested: tiny Llama (SmolLM2) and Gemma 3 (sliding window) models
    engine_gpu_types = ("llama", "gemma3_text")  # CUDA-graph tests passed on an H200 (Gemma 3: session 6)
    decodes_in_slots = True

    def start_history(self, ids: torch.Tensor, start_id: int) -> torch.Tensor:
        return ids  # the n-gram rules see the prompt too, as ``generate`` does

    def prefill(self, model, ids: torch.Tensor, mask: torch.Tensor, start_id: int):
        """(next-token logits, cache, mask the steps extend, context: none)."""
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        return out.logits[:, -1, :], cache_of(out), mask, None

    def decode_step(self, model, tokens: torch.Tensor, mask: torch.Tensor, context, cache: dict):
        """(next-token logits, the mask one longer)."""
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        positions = mask.sum(-1, keepdim=True) - 1
        out = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions, use_cache=True, **cache)
        return out.logits[:, -1, :], mask

    def output_offset(self, prompt_width: int) -> int:
        return prompt_width  # the prompt heads the generated rows

    def new_tokens(self, generated: torch.Tensor, prompt_width: int) -> torch.Tensor:
        return generated[:, prompt_width:]
