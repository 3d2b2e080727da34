"""Speed levers applied to a loaded model, each on its own switch so its gain can be measured
(`benchmarks/throughput.py`, docs/performance.md).

- `fuse_norms`: T5's RMS norm as one fused `torch.nn.functional.rms_norm` instead of the
  Hugging Face module's six elementwise kernels with an fp32 copy of the activations.
- `lora_inputs_in_compute_dtype`: PEFT casts every LoRA input to the adapter's fp32 dtype (a
  full copy of the activations per adapted layer, cast back to bf16 by autocast for the matrix
  product); in bf16 training the input stays bf16. The adapter weights stay fp32 (the optimizer
  updates fp32 values); only the activation copy goes.
- `shared_bias_attention`: T5 adds its relative position bias and the padding/causal mask to the
  attention scores. Transformers' SDPA path rebuilds that [batch, heads, q, k] tensor in every
  layer (and a zero "bias" for every cross-attention); here it is built once per stack and
  forward, and cross-attention gets the boolean padding mask alone.

Each returns how many modules it changed, so a caller can say what happened and a test can
check that the lever reached the model.
"""

from __future__ import annotations

import functools
import types

import torch
import torch.nn.functional as F

ATTENTION_NAME = "chef_genius_sdpa"


def _t5_norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    weight = self.weight
    if hidden_states.dtype != weight.dtype:  # mixed dtypes: the original module's rounding
        return type(self).forward(self, hidden_states)
    with torch.autocast(hidden_states.device.type, enabled=False):  # autocast would widen it to fp32
        return F.rms_norm(hidden_states, (hidden_states.shape[-1],), weight, self.variance_epsilon)


def fuse_norms(model: torch.nn.Module) -> int:
    """Replace the forward of every T5-style RMS norm (``T5LayerNorm`` and its copies in other
    architectures: weight only, no mean, ``variance_epsilon``) with the fused one."""
    changed = 0
    for module in model.modules():
        if type(module).__name__.endswith("T5LayerNorm") and hasattr(module, "variance_epsilon"):
            module.forward = types.MethodType(_t5_norm_forward, module)
            changed += 1
    return changed


def lora_inputs_in_compute_dtype(model: torch.nn.Module) -> int:
    """Stop PEFT from copying LoRA inputs to fp32 (see the module docstring)."""
    changed = 0
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled") and hasattr(module, "lora_A"):
            module.cast_input_dtype_enabled = False
            changed += 1
    return changed


class _MaskCache:
    """The last combined bias per (position bias, mask) pair: every layer of a stack receives the
    same two tensor objects within one forward, so identity is the key. Strong references are
    kept only for the latest forward (a few entries), so nothing outlives its step."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self.entries: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = []

    def get(self, bias: torch.Tensor, mask: torch.Tensor | None, build) -> torch.Tensor:
        if torch.compiler.is_compiling():  # inside a compiled block: no Python state, the compiler fuses it
            return build()
        for key_bias, key_mask, combined in self.entries:
            if key_bias is bias and key_mask is mask:
                return combined
        combined = build()
        self.entries = [(bias, mask, combined), *self.entries][: self.size]
        return combined


_cache = _MaskCache()


def _causal(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Boolean causal mask aligned bottom-right (a query sees every key up to its own position,
    also when earlier keys come from a cache)."""
    q, k = query.shape[2], key.shape[2]
    return torch.ones(q, k, dtype=torch.bool, device=query.device).tril(diagonal=k - q)[None, None]


def _combine(bias: torch.Tensor, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    bias = bias.to(dtype)
    if mask is None:
        return bias
    if mask.dtype == torch.bool:
        return torch.where(mask, bias, torch.finfo(dtype).min)
    return bias + mask.to(dtype)


def shared_bias_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     position_bias=None, **kwargs):
    """Attention function in Transformers' interface (registered as ``chef_genius_sdpa``).

    ``attention_mask`` is Transformers' SDPA mask: boolean (True = attend) or None when no
    position is hidden, in which case a causal module still needs its causal mask here.
    """
    mask = attention_mask
    if mask is None and getattr(module, "is_causal", False) and query.shape[2] > 1:
        mask = _causal(query, key)
    is_cross = getattr(module, "is_decoder", False) and not getattr(module, "is_causal", True)
    zero_bias = (position_bias is None or (is_cross and not module.has_relative_attention_bias
                                           and not position_bias.requires_grad))
    if not zero_bias:  # T5's cross-attention "bias" is a zero tensor: the mask alone is the same
        mask = _cache.get(position_bias, attention_mask,
                          lambda: _combine(position_bias, mask, query.dtype))
    elif mask is not None and mask.dtype != torch.bool:
        mask = mask.to(query.dtype)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def _mask_without_skips(sdpa_mask, *args, **kwargs):
    """Transformers' boolean SDPA mask, always built: its shortcut (no mask when nothing is
    padded) reads the mask on the host, a GPU sync that CUDA graph capture forbids."""
    kwargs["allow_is_causal_skip"] = False
    kwargs["allow_is_bidirectional_skip"] = False
    return sdpa_mask(*args, **kwargs)


def shared_bias_attention(model: torch.nn.Module) -> int:
    """Switch a T5-family model to `shared_bias_sdpa`; returns the attention modules affected
    (0 when the model is not T5-like: it keeps its own attention)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    attention = [m for m in model.modules() if type(m).__name__.endswith("T5Attention")]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not attention or not hasattr(base, "set_attn_implementation"):
        return 0
    AttentionInterface.register(ATTENTION_NAME, shared_bias_sdpa)
    AttentionMaskInterface.register(ATTENTION_NAME, functools.partial(_mask_without_skips, sdpa_mask))
    base.set_attn_implementation(ATTENTION_NAME)
    return len(attention)
