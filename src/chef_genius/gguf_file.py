"""The GGUF file of a Llama model, written as llama.cpp's ``convert_hf_to_gguf.py`` writes one
(``LlamaModel`` and ``TextModel``), through the `gguf` package's writer.

- Hyper-parameters under ``llama.*``; general.file_type and the quantization version.
- Tensors with llama.cpp's names (``gguf.get_tensor_name_map``); q and k projections in its rotary
  row order (``LlamaModel.permute``, undone by Transformers' GGUF reader); no ``output.weight``
  when the embeddings are tied; 1-D tensors and norms F32, the others F16, or Q8_0 (blocks of 32;
  F16 where a row does not divide, as the converter falls back).
- The tokenizer as ``get_vocab_base`` and ``gguf.SpecialVocab`` write a byte-level BPE one: tokens
  by id (ids the tokenizer lacks as ``[PAD<id>]``, UNUSED), token types (added tokens CONTROL or
  USER_DEFINED), merges, BOS/EOS/UNK/pad ids, add-BOS/EOS as the tokenizer does it, the chat
  template; plus the end-of-turn id where it is not EOS. The pre-tokenizer is named from the
  tokenizer's shape (the converter hashes a test string's tokens, which knows only published
  vocabularies).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from chef_genius import __version__
from chef_genius.errors import UserError

MARK_KEY = "chef_genius.export"  # GGUF metadata key that says chef-genius wrote the file
SUPPORTED = "Llama-architecture models with a byte-level BPE tokenizer (SmolLM, SmolLM2, Llama 3)"
Q8_BLOCK = 32

# The Split regexes of the pre-tokenizers llama.cpp names llama-bpe (Llama 3) and qwen2.
_LLAMA3_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                 "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_QWEN2_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


# ---------------------------------------------------------------------------- tokenizer
def pre_tokenizer_name(tokenizer) -> str:
    """llama.cpp's name (``tokenizer.ggml.pre``) for the tokenizer's pre-tokenizer.

    Raises:
        UserError: not byte-level BPE, or a pre-tokenizer llama.cpp has no match for here.
    """
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if (spec.get("model") or {}).get("type") != "BPE":
        raise UserError(f"the tokenizer is {(spec.get('model') or {}).get('type')}, not byte-level BPE: GGUF export "
                        f"supports {SUPPORTED}")
    if spec["model"].get("byte_fallback"):
        raise UserError(f"the tokenizer is SentencePiece-style BPE (byte fallback), not byte-level BPE: GGUF export "
                        f"supports {SUPPORTED}")
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if any(s.get("type") == "ByteLevel" and s.get("add_prefix_space") for s in steps):
        kinds = [*kinds, "prefix space"]  # llama.cpp adds no space before a byte-level BPE text
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"  # SmolLM, SmolLM2 (llama.cpp's regex: \p{N}, then GPT-2's)
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        if regex == _LLAMA3_REGEX:
            return "llama-bpe"
        if regex == _QWEN2_REGEX:
            return "qwen2"
    raise UserError(f"the tokenizer's pre-tokenizer ({' + '.join(str(k) for k in kinds) or 'none'}) is not one "
                    f"this GGUF export can name for llama.cpp; it supports {SUPPORTED}")


def _looks_special(token: str) -> bool:
    """convert_hf_to_gguf.py's `does_token_look_special` (the part that applies to BPE vocabularies)."""
    return token in ("<pad>", "<mask>") or (token.startswith("<|") and token.endswith("|>"))


def vocabulary(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens and token types by id, as convert_hf_to_gguf.py's `get_vocab_base`: added tokens are
    CONTROL when special, else USER_DEFINED; ids the tokenizer lacks are ``[PAD<id>]``, UNUSED."""
    from gguf import TokenType

    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    if by_id and max(by_id) >= vocab_size:
        raise UserError(f"the tokenizer has ids up to {max(by_id)}, beyond the model's vocabulary of {vocab_size}")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(TokenType.UNUSED)
        elif index in added:
            tokens.append(token)
            types.append(TokenType.CONTROL if added[index].special or _looks_special(token) else TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(TokenType.NORMAL)
    return tokens, types


def adds_special(tokenizer) -> tuple[bool, bool]:
    """(BOS, EOS): whether encoding a text adds them, as the tokenizer does it."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    add_bos = bos is not None and len(full) > len(plain) and full[0] == bos
    add_eos = eos is not None and len(full) > len(plain) and full[-1] == eos
    return add_bos, add_eos


def write_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """The tokenizer metadata, as convert_hf_to_gguf.py's `_set_vocab_gpt2` writes it, plus the
    end-of-turn token (``tokenizer.ggml.eot_token_id``) where it is not EOS."""
    import gguf

    from chef_genius.encoding import end_of_turn_id

    pre = pre_tokenizer_name(tokenizer)
    tokens, types = vocabulary(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory(prefix="chef-genius-export-") as scratch:
        tokenizer.save_pretrained(scratch)
        special = gguf.SpecialVocab(scratch, load_merges=True, n_vocab=vocab_size)
    if not special.merges:
        raise UserError("the tokenizer has no BPE merges to write")
    add_bos, add_eos = adds_special(tokenizer)
    special.add_special_token["bos"] = add_bos  # what the tokenizer does, not only what its config says
    special.add_special_token["eos"] = add_eos
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if isinstance(token_id, int) and 0 <= token_id < vocab_size:
            special.special_token_ids[kind] = token_id
    end = end_of_turn_id(tokenizer)
    if end != tokenizer.eos_token_id:
        special.special_token_ids["eot"] = end
    special.chat_template = tokenizer.chat_template or None
    special.add_to_gguf(writer, quiet=True)


# ---------------------------------------------------------------------------- tensors
def permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """convert_hf_to_gguf.py's ``LlamaModel.permute``: each head's rotary halves interleaved, the
    row order llama.cpp's RoPE expects."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def gguf_tensors(model, outtype: str):
    """(GGUF name, data, raw dtype or None) for each tensor of a Llama model."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    heads, kv_heads = config.num_attention_heads, getattr(config, "num_key_value_heads", None)
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue  # llama.cpp reads the output projection from token_embd (as the reader ties them)
        new_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise UserError(f"the model's tensor '{name}' has no GGUF name in llama.cpp's Llama layout")
        data = tensor.detach().to("cpu").float().numpy()
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            data = permute(data, heads, heads)
        elif name.endswith(("k_proj.weight", "k_proj.bias")):
            data = permute(data, heads, kv_heads)
        if data.ndim <= 1 or new_name.endswith("_norm.weight"):
            yield new_name, data.astype(np.float32), None
        elif outtype == "q8_0" and data.shape[-1] % Q8_BLOCK == 0:
            yield new_name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
        else:
            yield new_name, data.astype(np.float16), None


def write_hparams(writer, config, outtype: str) -> None:
    """The model's hyper-parameters, as convert_hf_to_gguf.py's `TextModel` and `LlamaModel` write them."""
    import gguf

    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    theta = getattr(config, "rope_theta", None)
    if theta is None:  # transformers 5 keeps it in rope_parameters
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
    if theta is not None:
        writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    if head_dim != hidden // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    scaling = getattr(config, "rope_scaling", None) or {}
    if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(scaling["factor"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if outtype == "q8_0" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def write_gguf(model, tokenizer, path: Path, outtype: str, name: str) -> None:
    """Write the GGUF file of a Llama ``model`` and its ``tokenizer`` at ``path`` (a new file: the
    caller stages and renames it)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        writer.add_name(name)
        writer.add_string(MARK_KEY, f"chef-genius {__version__}")
        write_hparams(writer, model.config, outtype)
        write_tokenizer(writer, tokenizer, model.config.vocab_size)
        for tensor_name, data, raw_dtype in gguf_tensors(model, outtype):
            writer.add_tensor(tensor_name, data, raw_dtype=raw_dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)
    finally:
        writer.close()
