"""`chef-genius export`: a trained run as one GGUF file (llama.cpp, Ollama) with an Ollama
Modelfile beside it, or as a merged Transformers folder (what `merge` writes).

The GGUF is written the way llama.cpp's ``convert_hf_to_gguf.py`` writes a Llama model, with the
`gguf` package's writer: a LoRA adapter is merged first; tensors get llama.cpp's names, q and k
projections its rotary row order (``LlamaModel.permute``, which Transformers' GGUF reader undoes);
1-D tensors stay F32, the others are F16, or Q8_0 (blocks of 32, F16 where a row does not divide);
the tokenizer goes into the metadata as ``get_vocab_base`` and ``gguf.SpecialVocab`` put it (tokens,
token types, merges, special ids, add-BOS/EOS, chat template). What a GGUF cannot say is refused:
seq2seq models (T5, BART), other architectures, SentencePiece or unknown pre-tokenizers, RoPE
scaling beyond none/linear, attention or MLP biases. The Modelfile (`chef_genius.modelfile`)
prompts as `generate` does and samples with the default decoding.

Nothing that exists is replaced without ``overwrite``, and then only a file chef-genius wrote;
each file is written beside its place and renamed into it.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chef_genius import __version__
from chef_genius.errors import UserError
from chef_genius.modelfile import MODELFILE_MARK, MODELFILE_NAME, modelfile_text

OUTTYPES = ("f16", "q8_0")
MARK_KEY = "chef_genius.export"  # GGUF metadata key that says chef-genius wrote the file
SUPPORTED = "Llama-architecture models with a byte-level BPE tokenizer (SmolLM, SmolLM2, Llama 3)"
Q8_BLOCK = 32

# The pre-tokenizers llama.cpp implements that a tokenizer.json can be recognised as, by its shape
# (convert_hf_to_gguf.py hashes a test string's tokens instead, which only knows published vocabularies).
_GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
_LLAMA3_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                 "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_QWEN2_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


@dataclass
class Exported:
    model: object  # the merged (or full) causal model, on the CPU, in eval mode
    tokenizer: object
    folder: Path  # the weights folder the run resolved to
    model_type: str


# ---------------------------------------------------------------------------- what can be exported
def model_config(run: Path):
    """The Transformers config of the run's model (an adapter's: its base model's), read without
    loading any weights.

    Raises:
        UserError: no model there, or its config cannot be read.
    """
    from transformers import AutoConfig

    from chef_genius.inference import model_folder

    folder = model_folder(run)
    base = str(folder)
    if (folder / "adapter_config.json").is_file():
        try:
            base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"{folder}: adapter_config.json is unreadable or names no base model") from None
    try:
        return AutoConfig.from_pretrained(base)
    except (OSError, ValueError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot read the model config of {folder} (base '{base}'): {first}") from None


def check_gguf_config(run: Path, config) -> None:
    """Refuse, in one line, a model that this GGUF export cannot write faithfully.

    Raises:
        UserError: seq2seq, another architecture, RoPE scaling other than linear, biases.
    """
    model_type = getattr(config, "model_type", "?")
    if getattr(config, "is_encoder_decoder", False):
        raise UserError(f"{run}: is a seq2seq model ({model_type}): llama.cpp and Ollama run causal models only; "
                        f"GGUF export supports {SUPPORTED} (--format merged writes any run)")
    if model_type != "llama":
        raise UserError(f"{run}: is a '{model_type}' model: GGUF export supports {SUPPORTED} "
                        "(--format merged writes it as a Transformers folder)")
    scaling = getattr(config, "rope_scaling", None) or {}
    kind = scaling.get("rope_type", scaling.get("type", "default")) if isinstance(scaling, dict) else "default"
    if kind not in ("default", "linear"):
        raise UserError(f"{run}: uses RoPE scaling '{kind}', which this GGUF export does not write "
                        "(none and linear are supported)")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise UserError(f"{run}: has attention or MLP biases, which this GGUF export does not write")


def load_merged(run: Path) -> Exported:
    """The run's model with its LoRA adapter merged in (a full model as it is) and its tokenizer."""
    from chef_genius.inference import load_run

    loaded = load_run(run, device="cpu")
    model = loaded.model.merge_and_unload() if loaded.is_adapter else loaded.model
    return Exported(model.eval(), loaded.tokenizer, loaded.folder, model.config.model_type)


# ---------------------------------------------------------------------------- output files
def written_by_us(path: Path) -> bool:
    """A GGUF file that carries chef-genius's export key, or a Modelfile with its first line."""
    try:
        if path.suffix == ".gguf":
            from gguf import GGUFReader

            return MARK_KEY in GGUFReader(str(path), "r").fields
        with open(path, encoding="utf-8") as handle:
            return handle.readline().startswith(MODELFILE_MARK)
    except Exception:  # noqa: BLE001 - whatever cannot be read as ours is not ours
        return False


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse a target that exists, unless ``overwrite`` and chef-genius wrote it.

    Raises:
        UserError: a folder, a link, a file that exists (without ``overwrite`` or not ours).
    """
    if path.is_symlink():
        raise UserError(f"{path}: is a link; not writing through it")
    if not path.exists():
        return
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name")
    if not overwrite:
        raise UserError(f"{path}: exists; choose another name, or pass --overwrite to replace a file that "
                        "chef-genius exported")
    if not written_by_us(path):
        raise UserError(f"{path}: exists and was not written by chef-genius export; not replacing it")


def staging_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")


def install(staged: Path, path: Path) -> None:
    """Flush ``staged`` to disk and rename it onto ``path``."""
    with open(staged, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(staged, path)


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
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
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


def write_gguf(exported: Exported, path: Path, outtype: str, name: str) -> None:
    """Write the GGUF file at ``path`` (a new file: the caller stages and renames it)."""
    import gguf

    model = exported.model
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        writer.add_name(name)
        writer.add_string(MARK_KEY, f"chef-genius {__version__}")
        write_hparams(writer, model.config, outtype)
        write_tokenizer(writer, exported.tokenizer, model.config.vocab_size)
        for tensor_name, data, raw_dtype in gguf_tensors(model, outtype):
            writer.add_tensor(tensor_name, data, raw_dtype=raw_dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)
    finally:
        writer.close()


# ---------------------------------------------------------------------------- the command
def export_gguf(run: Path, out: Path, outtype: str, overwrite: bool, templates: list[str]) -> tuple[Path, Path]:
    """Write ``out`` (GGUF) and the Modelfile beside it; returns both paths.

    Raises:
        UserError: a bad name or target, a model or tokenizer the export cannot write, a write failure.
    """
    if outtype not in OUTTYPES:
        raise UserError(f"--outtype must be one of {', '.join(OUTTYPES)}")
    if out.suffix != ".gguf":
        raise UserError(f"{out}: the GGUF file's name must end with .gguf")
    out = Path(os.path.abspath(out))
    modelfile = out.parent / MODELFILE_NAME
    for target in (out, modelfile):
        check_target(target, overwrite)
    if out.parent.exists() and not out.parent.is_dir():
        raise UserError(f"{out.parent}: is not a folder")
    check_gguf_config(run, model_config(run))
    exported = load_merged(run)
    check_gguf_config(run, exported.model.config)
    pre_tokenizer_name(exported.tokenizer)  # refused before anything is written
    text = modelfile_text(out.name, exported.tokenizer, templates)
    staged = [staging_path(out), staging_path(modelfile)]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_gguf(exported, staged[0], outtype, run.resolve().name)
        staged[1].write_text(text, encoding="utf-8")
        for target in (out, modelfile):  # nothing changed under us while writing
            check_target(target, overwrite)
        install(staged[0], out)
        install(staged[1], modelfile)
    except OSError as error:
        raise UserError(f"{out}: cannot write the export: {error.strerror or error}") from None
    finally:
        for path in staged:
            path.unlink(missing_ok=True)
    return out, modelfile


def export_merged(run: Path, out: Path, overwrite: bool) -> Path:
    """A standalone Transformers folder (safetensors and tokenizer), written as `merge` writes one,
    with the same marker, so either command may later refresh it; a full model is written as is."""
    from chef_genius.cli import MERGE_MARKER
    from chef_genius.inference import model_folder
    from chef_genius.outputs import OutputFolder

    destination = OutputFolder(out, MERGE_MARKER, "merged model", overwrite)
    destination.check()
    folder = model_folder(run)
    if destination.path in (Path(os.path.abspath(folder)), Path(os.path.abspath(run))):
        raise UserError(f"{out}: is the folder export reads from; choose another --out")
    inputs = [p for p in folder.iterdir() if p.is_file()]
    if (folder / "adapter_config.json").is_file():
        base = Path(json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"])
        inputs += [p for p in base.iterdir() if p.is_file()] if base.is_dir() else []
    exported = load_merged(run)
    staging = destination.stage()
    try:
        exported.model.save_pretrained(str(staging), safe_serialization=True)
        exported.tokenizer.save_pretrained(str(staging))
    except OSError as error:
        destination.discard(staging)
        raise UserError(f"{out}: cannot write the merged model: {error.strerror or error}") from None
    except BaseException:
        destination.discard(staging)
        raise
    destination.install(staging, inputs)
    return destination.path

