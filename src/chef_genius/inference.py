"""Load a trained run (base + adapter, or a merged / fully fine-tuned model) and generate recipes.

Used by validation samples, `generate`, `evaluate` and `merge`; one generation path for all.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from chef_genius.errors import UserError
from chef_genius.families import ModelFamily

# Every setting a preset can use, at Transformers' neutral values: a model's own
# generation_config (a summarization BART's beams and 3-gram ban) never leaks into a preset.
NEUTRAL = {"do_sample": False, "num_beams": 1, "no_repeat_ngram_size": 0, "repetition_penalty": 1.0, "top_k": 50,
           "top_p": 1.0, "temperature": 1.0}
DECODING = {
    "greedy": {"do_sample": False, "num_beams": 1},
    "beam": {"do_sample": False, "num_beams": 4},
    "sample": {"do_sample": True, "top_p": 0.95, "temperature": 0.8},
    # Greedy that cannot loop exactly: no 8-token run twice (a repeated ingredient line or step is one).
    "guarded": {"do_sample": False, "num_beams": 1, "no_repeat_ngram_size": 8},
    # Sampling that cannot loop: cooler sampling, no 10-token run twice.
    "careful": {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "no_repeat_ngram_size": 10},
    # Chef Transformer's decoding (t5-base on RecipeNLG): top-k 60, top-p 0.95, no repeated 3-grams.
    "chef": {"do_sample": True, "top_k": 60, "top_p": 0.95, "no_repeat_ngram_size": 3},
}

# Who writes the recipes: Transformers' `generate`, or chef-genius' own engine (`chef_genius.generation`).
ENGINES = ("transformers", "chef-genius")


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


@dataclass(frozen=True)
class Generation:
    text: str
    stopped: bool  # ended with an end token, not cut by the token limit
    tokens: int


def generate(model: torch.nn.Module, tokenizer, prompts: list[str], family: ModelFamily, decoding: str = "greedy",
             max_new_tokens: int = 512, num_return_sequences: int = 1, batch_size: int = 16, seed: int = 0,
             max_source_tokens: int = 512, grounded: float = 0.0, engine: str = "chef-genius") -> list[list[str]]:
    """Recipe texts for each prompt (``num_return_sequences`` each); see `generate_details`."""
    details = generate_details(model, tokenizer, prompts, family, decoding, max_new_tokens, num_return_sequences,
                               batch_size, seed, max_source_tokens, grounded, engine=engine)
    return [[g.text for g in row] for row in details]


@torch.no_grad()
def generate_details(model: torch.nn.Module, tokenizer, prompts: list[str], family: ModelFamily,
                     decoding: str = "greedy", max_new_tokens: int = 512, num_return_sequences: int = 1,
                     batch_size: int = 16, seed: int = 0, max_source_tokens: int = 512, grounded: float = 0.0,
                     engine: str = "chef-genius") -> list[list[Generation]]:
    """Recipes for each prompt (``num_return_sequences`` each): text, whether it stopped at an end
    token, and its length. ``grounded`` > 0 pushes the logits of foods the recipe's own ingredient
    list lacks down by that much while the steps are written (`chef_genius.grounding`).

    Prompts are encoded exactly as in training, by the model's ``family`` (`chef_genius.families`),
    which also pads them and cuts them from the output; generation stops at the end of turn or EOS.
    Sampling is seeded, and the caller's RNG states (CPU and CUDA) are restored afterwards, so
    generating during training never changes training. Compiled blocks run eagerly here: the
    growing KV cache would recompile them at every step.

    ``engine`` "chef-genius" decodes with `chef_genius.generation` (a cache allocated once,
    length-sorted continuous batches, CUDA graphs on a GPU): greedy and guarded give the same
    recipes as "transformers" (Transformers' ``generate``), sampled presets recipes from the same
    distribution. Beam search, ``grounded`` > 0 and models it was not proven on (a T5 on a GPU among
    them) use Transformers.
    Where a causal model's positions end, the engine stops each row at its own prompt's limit
    (Transformers: every row of a batch at its longest prompt's).
    """
    if decoding not in DECODING:
        raise UserError(f"unknown decoding '{decoding}' (choose from {', '.join(DECODING)})")
    if engine not in ENGINES:
        raise UserError(f"unknown generation engine '{engine}' (choose from {', '.join(ENGINES)})")
    with torch.compiler.set_stance("force_eager"):
        if engine == "chef-genius" and grounded <= 0 and _engine_runs(model, family, decoding, num_return_sequences):
            return _generate_with_engine(model, tokenizer, prompts, family, decoding, max_new_tokens,
                                         num_return_sequences, batch_size, seed, max_source_tokens)
        return _generate(model, tokenizer, prompts, family, decoding, max_new_tokens, num_return_sequences,
                         batch_size, seed, max_source_tokens, grounded)


def _settings(decoding: str, num_return_sequences: int) -> dict:
    settings = {**NEUTRAL, **DECODING[decoding]}
    if num_return_sequences > 1 and not settings["do_sample"]:
        settings["num_beams"] = max(settings["num_beams"], num_return_sequences)
    return settings


def _engine_runs(model, family: ModelFamily, decoding: str, num_return_sequences: int) -> bool:
    """Whether `chef_genius.generation` decodes this (else Transformers does, and says why on stderr
    when the model is the reason)."""
    from chef_genius.generation import unsupported

    reason = unsupported(model, family, _settings(decoding, num_return_sequences))
    if reason is not None and ("model type" in reason or "GPU" in reason):
        print(f"chef-genius: {reason}: generating with transformers", file=sys.stderr)
    return reason is None


def _generate_with_engine(model, tokenizer, prompts, family, decoding, max_new_tokens, num_return_sequences,
                          batch_size, seed, max_source_tokens) -> list[list[Generation]]:
    from chef_genius.generation import generate_ids

    device = next(model.parameters()).device
    stops, pad_id = family.stop_ids(tokenizer), tokenizer.pad_token_id
    sources = family.encode_sources(tokenizer, prompts, max_source_tokens)
    if not sources:
        return []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        decoded = generate_ids(model, sources, family, _settings(decoding, num_return_sequences), stops, pad_id,
                               max_new_tokens, batch_size, num_return_sequences)
    texts = tokenizer.batch_decode([ids for ids, _ in decoded], skip_special_tokens=True,
                                   clean_up_tokenization_spaces=False)
    rows = [Generation(text, stopped, len(ids) - 1 if stopped else sum(1 for t in ids if t != pad_id))
            for text, (ids, stopped) in zip(texts, decoded, strict=True)]
    return [rows[i:i + num_return_sequences] for i in range(0, len(rows), num_return_sequences)]


def _generate(model, tokenizer, prompts, family: ModelFamily, decoding, max_new_tokens, num_return_sequences,
              batch_size, seed, max_source_tokens, grounded) -> list[list[Generation]]:
    device = next(model.parameters()).device
    stops = family.stop_ids(tokenizer)
    settings = _settings(decoding, num_return_sequences)
    pad_id = tokenizer.pad_token_id
    outputs: list[list[Generation]] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            sources = family.encode_sources(tokenizer, prompts[start:start + batch_size], max_source_tokens)
            input_ids, attention_mask = family.pad_prompts(sources, pad_id)
            new_tokens = family.new_token_budget(model, input_ids.shape[1], max_new_tokens)
            extra = {}
            if grounded > 0:
                from transformers import LogitsProcessorList

                from chef_genius.grounding import GroundedFoods

                extra["logits_processor"] = LogitsProcessorList([GroundedFoods(
                    tokenizer, family.output_offset(input_ids.shape[1]), prompts[start:start + batch_size], grounded)])
            generated = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                       max_new_tokens=new_tokens, pad_token_id=pad_id,
                                       eos_token_id=stops if len(stops) > 1 else stops[0],
                                       num_return_sequences=num_return_sequences, **settings, **extra)
            generated = family.new_tokens(generated, input_ids.shape[1])
            texts = tokenizer.batch_decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            rows = generated.tolist()
            done = [_stopped(row, stops, pad_id) for row in rows]
            for i in range(len(sources)):
                span = range(i * num_return_sequences, (i + 1) * num_return_sequences)
                outputs.append([Generation(texts[j], done[j][0], done[j][1]) for j in span])
    return outputs


def _stopped(row: list[int], stops: list[int], pad_id: int) -> tuple[bool, int]:
    """(ended with a stop token, tokens before it). Padding only follows a finished sequence."""
    for position, token in enumerate(row):
        if token in stops:
            return True, position
    return False, sum(1 for t in row if t != pad_id)


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
