"""A lean training forward for T5-family encoder-decoders (T5, FLAN-T5, T5 v1.1, mT5).

Transformers' T5 runs each layer through several nested modules, PEFT wraps every adapted
projection in another, and each step of that Python costs host time per kernel; with
FLAN-T5-large the GPU waits on the host for most of a step (benchmarks/profile_step.py). This
module computes the same function from the same parameter tensors, in one plain function per
layer:

- every layer of a stack is one call of `encoder_layer` / `decoder_layer`, with the layer's
  weights passed as tensors, so ``torch.compile`` builds one graph per kind of layer and every
  layer reuses it (the norms, residual adds, dropout, the gated activation and the LoRA branch
  become a few fused kernels);
- the relative position bias is computed once per stack and combined with the mask once, as
  full [batch, heads, q, k] tensors: the encoder's with the padding mask, the decoder's
  self-attention with the causal mask alone (targets are right-padded and a real position never
  sees a later one), cross-attention the padding mask alone (T5 gives it no position bias);
- attention is ``scaled_dot_product_attention`` with T5's scale of 1;
- a LoRA projection is ``x W^T + dropout(x) A^T B^T * scale``, as PEFT computes it.

Numerically it is the Hugging Face forward (tests/test_fast_t5.py compares logits and
gradients, with and without LoRA, tied and untied heads). Generation and saving keep using the
Hugging Face model: only the training and validation loss go through here. `unsupported_reason`
says when a model cannot (another architecture, DoRA, several active adapters, fp16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F


class Linear(NamedTuple):
    """A projection's tensors: base weight and bias, and the LoRA pair (None without LoRA)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    lora_a: torch.Tensor | None
    lora_b: torch.Tensor | None


@dataclass(frozen=True)
class Static:
    """What every layer call shares; plain values, so a compiled layer guards on them once."""

    heads: int
    head_dim: int
    eps: float
    dropout: float
    lora_scale: float
    lora_dropout: float
    activation: str
    gated: bool
    training: bool


def _lora_adapter(module: torch.nn.Module) -> str | None:
    """The one active, unmerged LoRA adapter of a PEFT layer, or None for a plain layer."""
    if not hasattr(module, "lora_A") or not hasattr(module, "base_layer"):
        return None
    if getattr(module, "disable_adapters", False) or getattr(module, "merged", False):
        return None
    active = [name for name in module.active_adapters if name in module.lora_A]
    return active[0] if active else None


def _lora_settings(module: torch.nn.Module) -> tuple[float, float] | None:
    adapter = _lora_adapter(module)
    if adapter is None:
        return None
    dropout = module.lora_dropout[adapter]
    return float(module.scaling[adapter]), float(getattr(dropout, "p", 0.0))


def linear_of(module: torch.nn.Module) -> Linear:
    adapter = _lora_adapter(module)
    if adapter is None:
        base = getattr(module, "base_layer", module)
        return Linear(base.weight, base.bias, None, None)
    base = module.base_layer
    return Linear(base.weight, base.bias, module.lora_A[adapter].weight, module.lora_B[adapter].weight)


def _project(x: torch.Tensor, p: Linear, s: Static) -> torch.Tensor:
    y = F.linear(x, p.weight, p.bias)
    if p.lora_a is not None:
        h = F.dropout(x, s.lora_dropout, s.training) if s.lora_dropout > 0 else x
        y = y + F.linear(F.linear(h, p.lora_a), p.lora_b) * s.lora_scale
    return y


def _norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """T5's RMS norm: fp32 statistics, result in the weight's dtype."""
    if x.dtype == weight.dtype:
        with torch.autocast(x.device.type, enabled=False):  # autocast would widen rms_norm to fp32
            return F.rms_norm(x, (x.shape[-1],), weight, eps)
    variance = x.float().pow(2).mean(-1, keepdim=True)
    x = x * torch.rsqrt(variance + eps)
    if weight.dtype in (torch.float16, torch.bfloat16):
        x = x.to(weight.dtype)
    return weight * x


def _activation(x: torch.Tensor, name: str) -> torch.Tensor:
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return F.gelu(x, approximate="tanh")
    if name == "gelu":
        return F.gelu(x)
    if name == "relu":
        return F.relu(x)
    if name in ("silu", "swish"):
        return F.silu(x)
    from transformers.activations import ACT2FN

    return ACT2FN[name](x)


def _attention(x: torch.Tensor, source: torch.Tensor, q: Linear, k: Linear, v: Linear, o: Linear,
               mask: torch.Tensor | None, s: Static) -> torch.Tensor:
    batch, length, _ = x.shape
    query = _project(x, q, s).view(batch, length, s.heads, s.head_dim).transpose(1, 2)
    key = _project(source, k, s).view(batch, -1, s.heads, s.head_dim).transpose(1, 2)
    value = _project(source, v, s).view(batch, -1, s.heads, s.head_dim).transpose(1, 2)
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(query.dtype)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask,
                                         dropout_p=s.dropout if s.training else 0.0, scale=1.0)
    return _project(out.transpose(1, 2).reshape(batch, length, s.heads * s.head_dim), o, s)


def _feed_forward(x: torch.Tensor, wi: tuple[Linear, ...], wo: Linear, s: Static) -> torch.Tensor:
    if s.gated:
        hidden = _activation(_project(x, wi[0], s), s.activation) * _project(x, wi[1], s)
    else:
        hidden = _activation(_project(x, wi[0], s), s.activation)
    return _project(F.dropout(hidden, s.dropout, s.training), wo, s)


def encoder_layer(x: torch.Tensor, mask: torch.Tensor, w: tuple, s: Static) -> torch.Tensor:
    """One encoder block: self-attention and feed-forward, each pre-normed with a residual."""
    norm1, q, k, v, o, norm2, wi, wo = w
    h = _norm(x, norm1, s.eps)
    x = x + F.dropout(_attention(h, h, q, k, v, o, mask, s), s.dropout, s.training)
    h = _norm(x, norm2, s.eps)
    return x + F.dropout(_feed_forward(h, wi, wo, s), s.dropout, s.training)


def decoder_layer(x: torch.Tensor, self_mask: torch.Tensor, memory: torch.Tensor, cross_mask: torch.Tensor,
                  w: tuple, s: Static) -> torch.Tensor:
    """One decoder block: causal self-attention, cross-attention over the encoder output, and
    feed-forward."""
    norm1, q, k, v, o, norm2, cq, ck, cv, co, norm3, wi, wo = w
    h = _norm(x, norm1, s.eps)
    x = x + F.dropout(_attention(h, h, q, k, v, o, self_mask, s), s.dropout, s.training)
    h = _norm(x, norm2, s.eps)
    x = x + F.dropout(_attention(h, memory, cq, ck, cv, co, cross_mask, s), s.dropout, s.training)
    h = _norm(x, norm3, s.eps)
    return x + F.dropout(_feed_forward(h, wi, wo, s), s.dropout, s.training)


def _hf_model(model: torch.nn.Module) -> torch.nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def unsupported_reason(model: torch.nn.Module) -> str | None:
    """Why `FastT5` cannot run this model, or None when it can."""
    base = _hf_model(model)
    config = getattr(base, "config", None)
    if config is None or getattr(config, "model_type", None) not in ("t5", "mt5"):
        return "not a T5-family encoder-decoder"
    if not all(hasattr(base, name) for name in ("encoder", "decoder", "lm_head", "shared")):
        return "not a T5 model with an LM head"
    settings = set()
    for module in model.modules():
        if hasattr(module, "use_dora") and any(module.use_dora.values()):
            return "DoRA adapters"
        if hasattr(module, "lora_A") and len([a for a in module.active_adapters if a in module.lora_A]) > 1:
            return "several active adapters"
        if hasattr(module, "lora_embedding_A") and len(module.lora_embedding_A):
            return "LoRA on embeddings"
        lora = _lora_settings(module)
        if lora is not None:
            settings.add(lora)
    if len(settings) > 1:
        return "adapters with different scales or dropout"
    if base.shared.weight.dtype == torch.float16:
        return "fp16 weights (T5 clamps activations in fp16)"
    return None


class FastT5(torch.nn.Module):
    """Training forward of a T5 model (plain or PEFT-wrapped); `forward` takes the Hugging Face
    arguments used for training and returns an object with ``.logits``.

    Args:
        model: a ``T5ForConditionalGeneration``, or a PEFT model around one.
        compile_layers: compile `encoder_layer` and `decoder_layer` (one graph each, shared by
            every layer of the stack; dynamic shapes).
    """

    def __init__(self, model: torch.nn.Module, compile_layers: bool = False):
        super().__init__()
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"the fast T5 forward cannot run this model: {reason}")
        self.model = model
        # One adapter setting for the whole model (checked above); read once, not per forward.
        self.lora = next((x for x in map(_lora_settings, model.modules()) if x is not None), (1.0, 0.0))
        self.encoder_layer, self.decoder_layer = encoder_layer, decoder_layer
        if compile_layers:
            self.encoder_layer = torch.compile(encoder_layer, dynamic=True)
            self.decoder_layer = torch.compile(decoder_layer, dynamic=True)

    def _static(self, config) -> Static:
        lora = self.lora
        activation = getattr(config, "dense_act_fn", None) or config.feed_forward_proj.split("-")[-1]
        return Static(heads=config.num_heads, head_dim=config.d_kv, eps=config.layer_norm_epsilon,
                      dropout=config.dropout_rate, lora_scale=lora[0], lora_dropout=lora[1],
                      activation=activation, gated=getattr(config, "is_gated_act", False),
                      training=_hf_model(self.model).training)

    @staticmethod
    def _ff(layer) -> tuple:
        dense = layer.DenseReluDense
        wi = (linear_of(dense.wi_0), linear_of(dense.wi_1)) if hasattr(dense, "wi_0") else (linear_of(dense.wi),)
        return layer.layer_norm.weight, wi, linear_of(dense.wo)

    @staticmethod
    def _attn(layer, name: str) -> tuple:
        a = getattr(layer, name)
        return (layer.layer_norm.weight, linear_of(a.q), linear_of(a.k), linear_of(a.v), linear_of(a.o))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, decoder_input_ids: torch.Tensor):
        from transformers.modeling_outputs import Seq2SeqLMOutput

        base = _hf_model(self.model)
        config = base.config
        s = self._static(config)
        device = input_ids.device
        dtype = (torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type)
                 else base.shared.weight.dtype)
        lowest = torch.finfo(dtype).min
        checkpointing = s.training and getattr(base, "is_activation_checkpointing",
                                                  getattr(base, "is_gradient_checkpointing", False))

        # Encoder: bias [1, H, S, S] with the padding mask -> [B, H, S, S], once.
        encoder = base.encoder
        x = F.dropout(encoder.embed_tokens(input_ids), s.dropout, s.training)
        length = input_ids.shape[1]
        bias = encoder.block[0].layer[0].SelfAttention.compute_bias(length, length, device=device)
        keep = attention_mask.bool()[:, None, None, :]
        mask = torch.where(keep, bias.to(dtype), lowest)  # [B, H, S, S]
        for block in encoder.block:
            w = (*self._attn(block.layer[0], "SelfAttention"), *self._ff(block.layer[1]))
            x = self._call(self.encoder_layer, checkpointing, x, mask, w, s)
        memory = F.dropout(_norm(x, encoder.final_layer_norm.weight, s.eps), s.dropout, s.training)

        # Decoder: causal bias, once; cross-attention sees the padding mask alone.
        decoder = base.decoder
        y = F.dropout(decoder.embed_tokens(decoder_input_ids), s.dropout, s.training)
        length = decoder_input_ids.shape[1]
        bias = decoder.block[0].layer[0].SelfAttention.compute_bias(length, length, device=device)
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        # Masks as full [B, H, q, k] additive tensors: with a broadcast batch dimension or a boolean
        # mask, torch.compile lowered attention to a materialized softmax (measured on an H100:
        # 100 ms of a 450 ms step) instead of the fused cuDNN / memory-efficient kernels.
        batch, heads = decoder_input_ids.shape[0], s.heads
        self_mask = torch.where(causal, bias.to(dtype), lowest).expand(batch, heads, -1, -1).contiguous()
        cross_mask = torch.where(keep, torch.zeros((), dtype=dtype, device=device), lowest)
        cross_mask = cross_mask.expand(batch, heads, length, -1).contiguous()
        for block in decoder.block:
            w = (*self._attn(block.layer[0], "SelfAttention"), *self._attn(block.layer[1], "EncDecAttention"),
                 *self._ff(block.layer[2]))
            y = self._call(self.decoder_layer, checkpointing, y, self_mask, memory, cross_mask, w, s)
        y = F.dropout(_norm(y, decoder.final_layer_norm.weight, s.eps), s.dropout, s.training)
        if getattr(config, "scale_decoder_outputs", config.tie_word_embeddings):
            y = y * (config.d_model ** -0.5)
        return Seq2SeqLMOutput(logits=_project(y, linear_of(base.lm_head), s))

    @staticmethod
    def _call(layer, checkpointing: bool, *args):
        if checkpointing:
            from torch.utils.checkpoint import checkpoint

            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)
