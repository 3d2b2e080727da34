"""A Llama decode step (one token a row) as plain tensor operations, for the CPU.

On a CPU, a decode step of a small model pays for two things besides the products themselves:
Transformers' Python around every layer (decorators, keyword plumbing, output objects: about
15 ms of a 90 ms step of SmolLM2-135M on 2 cores under the profiler), and MKL's slow transposed
GEMV on row-major weights (`layout.py`). `LlamaDecodeStep` runs the same operations as Transformers'
`LlamaForCausalLM` (5.x) for a one-token step, in the same order and dtype: RMSNorm, rotary
embedding from the model's own `rotary_emb`, the grouped attention (`attention.grouped_attention`)
over the engine's `RowCache`, SiLU MLP, final norm and lm_head, on its own copies of the weights
(`_Packed`): q, k and v fused in one matrix and gate and up in another, and every matrix stored
transposed in two blocks of output columns, one batched product a layer's projection (fewer,
faster products, both cores busy; the copies double the weights' memory while a decoder lives,
0.54 GB for SmolLM2-135M).

Values are the model's; only MKL's summation order can differ from Transformers' row-major float32
(last bits of the logits, as between batch sizes). Anything it does not cover (another model type,
PEFT adapters, an activation other than SiLU) is left to the model's forward
(`LlamaDecodeStep.supports`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F

from chef_genius.generation import attention


class _Packed:
    """Linear layers stacked by output, as ``parts`` row-major (in, out / parts) blocks: ``x @ W.t()``
    as one batched product over the blocks, which MKL runs as a plain GEMM per block, a block per
    thread (the lm_head measured 11-13 ms row-major, 6-7 ms as one column-major block, 5-6 ms as two
    on 2 cores). Biases: zeros where a layer has none; None when none has one."""

    def __init__(self, linears: list[torch.nn.Linear], parts: int = 2):
        first = linears[0].weight
        width, total = first.shape[1], sum(layer.out_features for layer in linears)
        self.parts = parts if total % parts == 0 else 1
        self.total = total
        chunk = total // self.parts
        self.weight = first.new_empty((self.parts, width, chunk))
        at = 0  # one transposing copy of each layer's rows into the blocks they fall in
        for layer in linears:
            for part in range(at // chunk, (at + layer.out_features - 1) // chunk + 1):
                low, high = max(at, part * chunk), min(at + layer.out_features, (part + 1) * chunk)
                self.weight[part, :, low - part * chunk:high - part * chunk].copy_(layer.weight[low - at:high - at].t())
            at += layer.out_features
        self.bias = None if all(layer.bias is None for layer in linears) else torch.cat(
            [first.new_zeros(layer.out_features) if layer.bias is None else layer.bias for layer in linears])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _packed(x, self.weight, self.bias, self.total)


def _packed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, total: int) -> torch.Tensor:
    """`_Packed.__call__` on its tensors (what a compiled layer traces)."""
    flat = x.reshape(-1, x.shape[-1])
    out = torch.bmm(flat.expand(weight.shape[0], *flat.shape), weight)  # (parts, rows, total / parts)
    out = out.transpose(0, 1).reshape(flat.shape[0], total)
    if bias is not None:
        out = out + bias
    return out.view(*x.shape[:-1], total)


def _rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`LlamaRMSNorm.forward`, operation for operation."""
    dtype = hidden.dtype
    hidden = hidden.to(torch.float32)
    variance = hidden.pow(2).mean(-1, keepdim=True)
    hidden = hidden * torch.rsqrt(variance + eps)
    return weight * hidden.to(dtype)


class _Shape(NamedTuple):
    heads: int
    kv_heads: int
    head_dim: int
    inter: int
    eps: float
    scaling: float


def _project(hidden, cos, sin, weights, shape: _Shape):
    """A layer's q (batch, heads, 1, dim), k and v (batch, kv heads, 1, dim), rotary applied."""
    norm1, qkv, qkv_bias = weights[:3]
    batch, q_size, kv_size = hidden.shape[0], shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    projected = _packed(_rms_norm(hidden, norm1, shape.eps), qkv, qkv_bias, q_size + 2 * kv_size)
    qk = projected[..., :q_size + kv_size].view(batch, 1, shape.heads + shape.kv_heads, shape.head_dim)
    qk = qk.transpose(1, 2)
    # Transformers' rotate_half(x) * sin is cat(-x2, x1) * sin: here roll(x) * cat(-sin1, sin2),
    # the same products bit for bit (a sign moves), for q and k heads at once.
    qk = (qk * cos) + (torch.roll(qk, shape.head_dim // 2, -1) * sin)
    v = projected[..., q_size + kv_size:].view(batch, 1, shape.kv_heads, shape.head_dim).transpose(1, 2)
    return qk[:, :shape.heads], qk[:, shape.heads:], v


def _finish(residual, q, keys, values, mask, weights, shape: _Shape):
    """The layer's output from its attention over ``keys``/``values`` and its MLP."""
    o_proj, o_bias, norm2, gate_up, gate_up_bias, down, down_bias = weights[3:]
    batch, width = residual.shape[0], residual.shape[-1]
    out, _ = attention.grouped_attention(None, q, keys, values, mask, scaling=shape.scaling)
    hidden = residual + _packed(out.reshape(batch, 1, -1), o_proj, o_bias, width)
    gate, up = _packed(_rms_norm(hidden, norm2, shape.eps), gate_up, gate_up_bias, 2 * shape.inter).split(
        (shape.inter, shape.inter), dim=-1)
    return hidden + _packed(F.silu(gate) * up, down, down_bias, width)


def _whole_cache_layer(hidden, cos, sin, mask, keys, values, where, weights, shape: _Shape):
    """A layer over its whole cache (a graph's step): ``keys``/``values`` (batch, kv heads,
    capacity, dim) get the step's key and value at column ``where`` (batch,), as `RowCache.update`
    writes them. What `LlamaDecodeStep` compiles."""
    q, k, v = _project(hidden, cos, sin, weights, shape)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    keys[rows, :, where] = k[:, :, 0]
    values[rows, :, where] = v[:, :, 0]
    return _finish(hidden, q, keys, values, mask, weights, shape)


def _tensors(packed: _Packed) -> tuple:
    return packed.weight, packed.bias


class LlamaDecodeStep:
    """Logits of one decode step of a plain `LlamaForCausalLM`, from its weights (see the module).

    On a GPU (`EngineOptions.fused`, off by default) the same step runs inside the engine's CUDA
    graph, with one block a matrix (``parts=1``): three products a layer fewer than the model's
    forward (q, k and v in one; gate and up in one). With ``compiled`` (`EngineOptions.compiled`)
    each layer of a step over the whole cache (what a graph runs) is one ``torch.compile``d
    function, the same for every layer (one compilation a cache size), so that its element-wise
    work (norms, rotary, mask and softmax, residuals, SiLU) runs as a few fused kernels.

    Args:
        model: the model (``supports(model, device)`` must hold); its weights are copied (fused and
            packed) when this is made, so they must not change while it is used: the engine makes
            one per decoder (about 0.3 s for SmolLM2-135M on 2 cores). Not kept across runs: a
            weight changed through ``.data`` leaves no trace (no version counter) to tell a stale
            copy by.
        parts: blocks of output columns a matrix is stored in (2: both CPU cores busy; 1 on a GPU).
        compiled: compile the layers (above); steps over part of the cache stay eager.
    """

    def __init__(self, model: torch.nn.Module, parts: int = 2, compiled: bool = False):
        base = model.model
        config = model.config
        self.rotary, self.embed = base.rotary_emb, base.embed_tokens.weight
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.eps = float(config.rms_norm_eps)
        self.shape = _Shape(config.num_attention_heads, config.num_key_value_heads, self.head_dim,
                            base.layers[0].mlp.gate_proj.out_features, self.eps, self.head_dim ** -0.5)
        with torch.inference_mode(False), torch.no_grad():
            self.layers = []
            for layer in base.layers:
                attn, mlp = layer.self_attn, layer.mlp
                self.layers.append((layer.input_layernorm.weight,
                                    *_tensors(_Packed([attn.q_proj, attn.k_proj, attn.v_proj], parts)),
                                    *_tensors(_Packed([attn.o_proj], parts)), layer.post_attention_layernorm.weight,
                                    *_tensors(_Packed([mlp.gate_proj, mlp.up_proj], parts)),
                                    *_tensors(_Packed([mlp.down_proj], parts))))
            self.norm = base.norm.weight
            self.head = _Packed([model.lm_head], parts)
        self._layer = torch.compile(functools.partial(_whole_cache_layer, shape=self.shape), dynamic=False,
                                    fullgraph=True) if compiled else None

    @staticmethod
    def supports(model: torch.nn.Module, device: str = "cpu") -> bool:
        """A plain Transformers `LlamaForCausalLM` (no adapters, plain Linear layers) with SiLU MLPs,
        on ``device`` (a device type)."""
        if type(model).__name__ != "LlamaForCausalLM" or hasattr(model, "peft_config"):
            return False
        if getattr(model.config, "hidden_act", None) != "silu" or getattr(model.config, "pretraining_tp", 1) != 1:
            return False
        base = model.model
        linears = [model.lm_head] + [getattr(layer.self_attn, name) for layer in base.layers
                                     for name in ("q_proj", "k_proj", "v_proj", "o_proj")] + \
            [getattr(layer.mlp, name) for layer in base.layers for name in ("gate_proj", "up_proj", "down_proj")]
        if any(type(linear) is not torch.nn.Linear for linear in linears):
            return False
        return next(model.parameters()).device.type == device

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        """(batch, vocab) logits for ``ids`` (batch, 1) at ``positions`` (batch, 1), attending under
        the additive ``mask`` (batch, 1, 1, columns) to ``cache`` (a `state.RowCache`, updated)."""
        hidden = F.embedding(ids, self.embed)  # (batch, 1, hidden)
        cos, sin = self.rotary(hidden, positions)
        half = self.head_dim // 2
        cos, sin = cos.unsqueeze(1), torch.cat((-sin[..., :half], sin[..., half:]), dim=-1).unsqueeze(1)
        whole = cache.decode_rows is None and cache.visible is None and len(cache.keys) == len(self.layers)
        if self._layer is not None and whole:
            where = cache.column - 1
            with torch.compiler.set_stance("default"):  # a server decodes under "force_eager"
                for index, weights in enumerate(self.layers):
                    hidden = self._layer(hidden, cos, sin, mask, cache.keys[index], cache.values[index], where,
                                         weights)
        else:
            for index, weights in enumerate(self.layers):
                q, k, v = _project(hidden, cos, sin, weights, self.shape)
                keys, values = cache.update(k, v, index)
                hidden = _finish(hidden, q, keys, values, mask, weights, self.shape)
        hidden = _rms_norm(hidden, self.norm, self.eps)
        return self.head(hidden[:, -1])
