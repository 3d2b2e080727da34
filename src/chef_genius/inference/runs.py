"""Load a trained run: which weights folder a run, checkpoint, adapter, model folder or GGUF file
means, the model with its tokenizer (base + LoRA adapter, or a merged / fully fine-tuned model), and
a run as a model to train on (an adapter merged into its base once).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from chef_genius.errors import UserError
from chef_genius.families import ModelFamily


@dataclass
class LoadedRun:
    model: torch.nn.Module
    tokenizer: object
    family: ModelFamily
    folder: Path
    is_adapter: bool


WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")


def _holds_model(folder: Path) -> bool:
    """A model or adapter folder: its config and its weights."""
    has_config = (folder / "adapter_config.json").is_file() or (folder / "config.json").is_file()
    return has_config and any((folder / name).is_file() for name in WEIGHT_FILES)


def _is_checkpoint(folder: Path) -> bool:
    return (folder / "trainer_state.json").is_file()


def resolve_model_folder(path: str | Path) -> tuple[Path, str | None]:
    """The weights folder for ``path`` and, when it is not the obvious one, a line saying which.

    ``path`` may be a run folder (its ``final/``, which holds the best weights; a run without
    one, interrupted, gives its best complete checkpoint, else its newest complete one), a
    checkpoint folder (``RUN/checkpoints/step-N``, checked against its manifest), an adapter, a
    model folder or a GGUF file (its converted folder, `chef_genius.model.loading.gguf_folder`).

    Raises:
        UserError: nothing loadable there, or the checkpoint is damaged.
    """
    from chef_genius.checkpoints import folder as ckpt

    path = Path(path)
    if path.suffix.lower() == ".gguf" and not path.is_dir():
        from chef_genius.model.loading import gguf_folder

        return gguf_folder(path), None
    if not path.is_dir():
        raise UserError(f"{path}: no such run, adapter or model folder")
    if _holds_model(path / "final"):
        return path / "final", None
    if _holds_model(path):
        if _is_checkpoint(path):
            problem = ckpt.checkpoint_problem(path)
            if problem is not None:
                raise UserError(f"{path}: the checkpoint is incomplete or damaged ({problem}); use another one")
        return path, None
    found = ckpt.list_checkpoints(path / "checkpoints")
    if not found:
        raise UserError(f"{path}: not a run folder, checkpoint, adapter or model (no final/, checkpoints/, "
                        "adapter_config.json or config.json with weights)")
    newest = ckpt.newest_complete(found)
    if newest is None:
        raise UserError(f"{path}: has no final/ and no complete checkpoint ({found[-1].name}: "
                        f"{ckpt.checkpoint_problem(found[-1])})")
    state = json.loads((newest / "trainer_state.json").read_text(encoding="utf-8"))
    best_step = state.get("best_step")
    best = path / "checkpoints" / f"{ckpt.PREFIX}{best_step:08d}" if isinstance(best_step, int) else None
    if best is not None and best.is_dir() and ckpt.checkpoint_problem(best) is None:
        return best, (f"{path} has no final/ (the run did not finish): using its best checkpoint {best.name} "
                      f"(val_loss {state.get('best_val_loss'):.4f}; the newest is {newest.name})")
    return newest, (f"{path} has no final/ (the run did not finish): using its newest complete checkpoint "
                    f"{newest.name} (no best checkpoint recorded)")


def model_folder(path: str | Path) -> Path:
    """The weights folder of a run, checkpoint, adapter or model (`resolve_model_folder`)."""
    return resolve_model_folder(path)[0]


def _tokenizer_folder(folder: Path, base_name: str) -> tuple[str, str | None]:
    """Where the tokenizer is: the weights folder; for a checkpoint written without one, the
    run's final/, else the base model (and a line saying so)."""
    if (folder / "tokenizer_config.json").is_file():
        return str(folder), None
    if _is_checkpoint(folder):
        final = folder.parent.parent / "final"
        if (final / "tokenizer_config.json").is_file():
            return str(final), f"{folder} holds no tokenizer: using {final}'s"
    return base_name, f"{folder} holds no tokenizer: using the base model's ({base_name})"


def load_run(path: str | Path, device: str | None = None) -> LoadedRun:
    """Load base + LoRA adapter, or a full model, with its tokenizer, in eval mode. Which
    weights (`resolve_model_folder`) and tokenizer, when not the obvious ones, is said on stderr.

    Raises:
        UserError: the folder holds no model, or its base model cannot be found.
    """
    from chef_genius.model.loading import load_base

    folder, note = resolve_model_folder(path)
    if note:
        print(f"chef-genius: {note}", file=sys.stderr)
    adapter = (folder / "adapter_config.json").exists()
    try:
        base_name = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] if adapter \
            else str(folder)
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{folder}: adapter_config.json is unreadable or names no base model") from None
    tokenizer_name, note = _tokenizer_folder(folder, base_name)
    if note:
        print(f"chef-genius: {note}", file=sys.stderr)
    try:
        base = load_base(base_name, tokenizer_name=tokenizer_name)
    except UserError as error:
        raise UserError(f"{folder}: {error}") from None
    model = base.model
    if adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(folder))
        except (OSError, ValueError, KeyError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"cannot load {folder} (base model '{base_name}'): {first_line}") from None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    return LoadedRun(model, base.tokenizer, base.family, folder, adapter)


def training_model_name(name: str) -> str:
    """`model.name` as a model to train on: a run or adapter folder becomes a model folder with
    what it learned (`trained_model_folder`); anything else as `model.loading.local_model_name`."""
    from chef_genius.model.loading import local_model_name

    path = Path(name).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():  # a run or an adapter: what it learned
        return str(trained_model_folder(path))
    return local_model_name(name)


def trained_model_folder(path: Path) -> Path:
    """A run, checkpoint or adapter folder as a model to train on: its weights folder (a run's
    final/, `resolve_model_folder`), with a LoRA adapter merged into its base model once
    into a cached folder (keyed by the adapter file's size and modification time), as a GGUF file
    is converted once: preference tuning, say, starts from what the run learned.

    Raises:
        UserError: nothing loadable there.
    """
    from chef_genius.model.loading import cache_dir, save_cached_folder

    folder, note = resolve_model_folder(path)
    if note:
        print(f"chef-genius: {note}", flush=True)
    weights = folder / "adapter_model.safetensors"
    if not (folder / "adapter_config.json").is_file() or not weights.is_file():
        return folder.resolve()
    stat = weights.stat()
    merged = cache_dir() / "merged" / f"{folder.resolve().parent.name}-{folder.name}-{stat.st_size}-{stat.st_mtime_ns}"
    if (merged / "config.json").exists():
        return merged
    print(f"merging the LoRA adapter of {folder} into its base model (once): {merged}", flush=True)
    loaded = load_run(folder, device="cpu")
    model = loaded.model.merge_and_unload() if loaded.is_adapter else loaded.model
    return save_cached_folder(model, loaded.tokenizer, merged, f"merged from {folder.resolve()}", "merged")
