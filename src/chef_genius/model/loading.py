"""Load the base model and tokenizer, build the offline `tiny` model, apply LoRA (Hu et al. 2021)
through PEFT.

LoRA never falls back silently: if PEFT cannot adapt the model, training stops with the reason.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from chef_genius.config_schema import LoraSettings, ModelConfig
from chef_genius.encoding import drop_chat_template
from chef_genius.errors import UserError
from chef_genius.families import ModelFamily, family_of
from chef_genius.model.hub import check_hub_model

TINY = "tiny"
TINY_VOCAB = 2000

# Attention projections adapted by default, per model type (the seed's T5 choice: q and v).
LORA_TARGETS = {
    "t5": ["q", "v"], "mt5": ["q", "v"], "umt5": ["q", "v"],
    "bart": ["q_proj", "v_proj"], "mbart": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"], "gemma": ["q_proj", "v_proj"], "gemma2": ["q_proj", "v_proj"],
    "gemma3_text": ["q_proj", "v_proj"],  # Gemma 3 270M/1B: a GGUF file converts to the text-only model
    "phi3": ["qkv_proj"],
}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    family: ModelFamily
    model_type: str


def build_tiny(texts: list[str], seed: int, folder: Path) -> Path:
    """Train a tokenizer on ``texts``, build a small random T5, save both to ``folder``.

    The saved folder is an ordinary Hugging Face model folder, so `generate` and `merge` load the
    base model of a tiny run like any other.
    """
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    from chef_genius.tokenizer import train_t5_style_tokenizer

    raw = train_t5_style_tokenizer(texts, vocab_size=TINY_VOCAB, algorithm="bpe")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>", model_max_length=1024)
    config = T5Config(vocab_size=len(tokenizer), d_model=64, d_kv=16, d_ff=128, num_layers=2,
                      num_decoder_layers=2, num_heads=4, dropout_rate=0.1, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    # Written beside its place and renamed: a kill mid-write never leaves a half model to load.
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    os.replace(staging, folder)
    return folder


def cache_dir() -> Path:
    """Where converted models are kept: $CHEF_GENIUS_CACHE, else ~/.cache/chef-genius."""
    return Path(os.environ.get("CHEF_GENIUS_CACHE") or Path.home() / ".cache" / "chef-genius").expanduser()


def gguf_folder(path: Path) -> Path:
    """A model folder (safetensors in fp32, tokenizer with its chat template) converted once from a
    GGUF file with transformers' ``gguf_file=`` loader, which dequantizes every tensor; cached by
    the file's name, size and modification time, so later runs, `generate` and `merge` load the
    folder like any other.

    Raises:
        UserError: the file is missing, the `gguf` package is absent, or transformers cannot read it.
    """
    path = path.expanduser().resolve()
    if not path.is_file():
        raise UserError(f"cannot load model '{path}': no such GGUF file")
    stat = path.stat()
    folder = cache_dir() / "gguf" / f"{path.stem}-{stat.st_size}-{stat.st_mtime_ns}"
    if (folder / "config.json").exists():
        return folder
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError:
        raise UserError("a GGUF model needs the 'gguf' package: pip install gguf") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {path.name} to a model folder (once): {folder}", file=sys.stderr, flush=True)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot load GGUF model '{path}': {first_line}") from None
    # The weights are plain dequantized tensors now; what marks the model as GGUF-quantized only
    # stops save_pretrained.
    model.hf_quantizer = None
    for holder in (model, model.config):
        if hasattr(holder, "quantization_config"):
            delattr(holder, "quantization_config")
    return save_cached_folder(model, tokenizer, folder, f"converted from {path} ({stat.st_size} bytes)", "converted")


def save_cached_folder(model: torch.nn.Module, tokenizer, folder: Path, source: str, what: str) -> Path:
    """Write a model folder of the cache in one step (a staging folder renamed into place), with
    SOURCE.txt saying where it came from; another process that wrote it first wins."""
    staging = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "SOURCE.txt").write_text(source + "\n", encoding="utf-8")
        os.replace(staging, folder)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        if (folder / "config.json").exists():  # another process wrote it first
            return folder
        raise UserError(f"cannot write the {what} model to {folder}: {error.strerror or error}") from None
    return folder


def local_model_name(name: str) -> str:
    """A GGUF file becomes its converted folder; an existing path becomes absolute (an adapter's
    config records it); hub ids pass through. A run or adapter folder to train on is made a model
    folder first (`inference.training_model_name`).

    Raises:
        UserError: a path that does not exist.
    """
    if name.lower().endswith(".gguf"):
        return str(gguf_folder(Path(name)))
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise UserError(f"cannot load model '{name}': no such folder")
    return name


def load_base(name: str, architecture: str = "auto", dtype: torch.dtype = torch.float32,
              tokenizer_name: str | None = None) -> LoadedModel:
    """Load a model and tokenizer from a hub id or a local folder: the one loader of training,
    `generate`, `evaluate` and `merge` (`chef_genius.inference.load_run` adds a run's adapter).

    Args:
        name: hub id or local model folder.
        architecture: "auto" (from the model config), "seq2seq" or "causal".
        dtype: the weights' dtype once loaded.
        tokenizer_name: where the tokenizer is, when not beside the weights.

    Raises:
        UserError: the model cannot be found or loaded (one line, with the reason).
    """
    from transformers import AutoConfig, AutoTokenizer

    logging.getLogger("transformers").setLevel(logging.ERROR)
    check_hub_model(name)
    try:
        config = AutoConfig.from_pretrained(name)
        family = family_of(config, architecture)
        model = family.auto_class().from_pretrained(name, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name or name)
    except (OSError, ValueError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot load model '{name}': {first_line}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, family, config.model_type)


def apply_lora(loaded: LoadedModel, settings: LoraSettings) -> torch.nn.Module:
    """Wrap the model with LoRA adapters.

    Raises:
        UserError: PEFT is missing or cannot adapt this model; the message names --disable-lora.
    """
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError:
        raise UserError("LoRA needs the 'peft' package (pip install peft), or pass --disable-lora") from None
    targets = settings.target_modules or LORA_TARGETS.get(loaded.model_type)
    if not targets:
        raise UserError(f"no default LoRA targets for model type '{loaded.model_type}'; "
                        "set lora.target_modules (or ['all-linear'])")
    target_modules = "all-linear" if targets == ["all-linear"] else targets
    config = LoraConfig(task_type=getattr(TaskType, loaded.family.lora_task),
                        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=target_modules)
    try:
        return get_peft_model(loaded.model, config)
    except (ValueError, TypeError, RuntimeError) as error:
        raise UserError(f"LoRA could not be applied ({str(error).splitlines()[0]}); "
                        "fix lora.target_modules or train the full model with --disable-lora") from None


def repeated_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Every block of each stack of identical blocks (T5Block, GPT2Block, LlamaDecoderLayer...):
    the units of regional compilation and of FSDP sharding. A T5Block's own list of mixed
    sublayers is not a stack."""
    return [child for module in model.modules()
            if isinstance(module, torch.nn.ModuleList) and len(module) > 1 and len({type(c) for c in module}) == 1
            for child in module]


def compile_blocks(model: torch.nn.Module) -> int:
    """Regional compilation: compile each of the `repeated_blocks`, with dynamic shapes so
    varying batch lengths reuse the compiled code. Returns the number of blocks compiled."""
    blocks = repeated_blocks(model)
    for block in blocks:
        block.compile(dynamic=True)
    return len(blocks)


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, counting shared tensors once."""
    seen, trainable, total = set(), 0, 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total


def resolve_tokenizer(config: ModelConfig, folder_for_tiny: Path, texts: list[str], seed: int,
                      local_name: Callable[[str], str] = local_model_name):
    """(tokenizer, model family) without loading weights, for the plan view."""
    from transformers import AutoConfig, AutoTokenizer

    name = config.name
    if name == TINY:
        if not (folder_for_tiny / "config.json").exists():
            build_tiny(texts, seed, folder_for_tiny)
        name = str(folder_for_tiny)
    else:
        name = local_name(name)
        check_hub_model(name)
    try:
        model_config = AutoConfig.from_pretrained(name)
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"cannot load model '{config.name}': {str(error).strip().splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    family = family_of(model_config, config.architecture)
    if not (family.keeps_chat_template() and config.chat_template):
        drop_chat_template(tokenizer)
    return tokenizer, family


def resolve_model(config: ModelConfig, run_dir: Path, texts: list[str], seed: int, dtype: torch.dtype,
                  local_name: Callable[[str], str] = local_model_name) -> LoadedModel:
    """The base model for a run: `tiny` is built (once per run folder) from the data's texts."""
    name = config.name
    if name == TINY:
        folder = (run_dir / "base_model").resolve()  # absolute: the adapter config records it
        if not (folder / "config.json").exists():
            build_tiny(texts, seed, folder)
        name = str(folder)
    else:
        name = local_name(name)
    loaded = load_base(name, config.architecture, dtype)
    if not (loaded.family.keeps_chat_template() and config.chat_template):
        drop_chat_template(loaded.tokenizer)
    return loaded
