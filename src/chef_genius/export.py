"""`chef-genius export`: a trained run as one GGUF file (llama.cpp, Ollama) with an Ollama
Modelfile beside it, or as a merged Transformers folder (what `merge` writes).

The GGUF is written (`chef_genius.gguf_file`) the way llama.cpp's ``convert_hf_to_gguf.py`` writes
a Llama model, with the `gguf` package's writer: a LoRA adapter is merged first; tensors get llama.cpp's names, q and k
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
from dataclasses import dataclass
from pathlib import Path

from chef_genius.errors import UserError
from chef_genius.gguf_file import MARK_KEY, SUPPORTED, pre_tokenizer_name, write_gguf
from chef_genius.modelfile import MODELFILE_MARK, MODELFILE_NAME, modelfile_text

OUTTYPES = ("f16", "q8_0")


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
    from chef_genius.families import family_of

    model_type = getattr(config, "model_type", "?")
    if not family_of(config).exports_gguf:
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
        raise UserError(f"{path}: exists; choose another --out, or pass --overwrite to replace a file that "
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
        write_gguf(exported.model, exported.tokenizer, staged[0], outtype, run.resolve().name)
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


MERGE_MARKER = ".chef-genius-model"  # marks a folder `merge` / `export --format merged` wrote


def export_merged(run: Path, out: Path, overwrite: bool, command: str = "export") -> Path:
    """A standalone Transformers folder (safetensors and tokenizer; `merge` and `export --format
    merged` both write it, with the same marker, so either may later refresh it); a full model is
    written as is. Written like `prepare`'s dataset (`chef_genius.outputs`): a foreign folder needs
    ``overwrite``, and no file chef-genius did not write is removed or replaced."""
    from chef_genius.inference import model_folder
    from chef_genius.outputs import OutputFolder

    destination = OutputFolder(out, MERGE_MARKER, "merged model", overwrite)
    destination.check()
    folder = model_folder(run)
    if destination.path in (Path(os.path.abspath(folder)), Path(os.path.abspath(run))):
        raise UserError(f"{out}: is the folder {command} reads from; choose another --out")
    exported = load_merged(run)  # an unreadable adapter_config.json is refused here
    inputs = [p for p in folder.iterdir() if p.is_file()]
    if (folder / "adapter_config.json").is_file():
        base = Path(json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"])
        inputs += [p for p in base.iterdir() if p.is_file()] if base.is_dir() else []
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

