"""Settings resolved into a `TrainConfig` (the schema: `chef_genius.config_schema`).

Values are resolved in this order, later winning: dataclass defaults < hardware preset < YAML file
< command-line flags. Unknown keys and values of the wrong type are errors, never silently ignored.
Also the `tiny` model's own settings, the command-line flags of `train`, and the config as plain
data and YAML.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from chef_genius.config_schema import FULL_LEARNING_RATE, LORA_LEARNING_RATE, ModelConfig, TrainConfig
from chef_genius.errors import UserError

PRESETS: dict[str, dict[str, Any]] = {
    # From the seed's "Best Practices" table.
    "rtx5090": {"optim": {"epochs": 5, "batch_size": 12, "gradient_accumulation_steps": 4},
                "lora": {"r": 16, "alpha": 32}},
    "rtx4090": {"optim": {"batch_size": 8, "gradient_accumulation_steps": 6}, "lora": {"r": 16}},
    "rtx3090": {"optim": {"batch_size": 6, "gradient_accumulation_steps": 8}, "lora": {"r": 8, "alpha": 16}},
    # Not in the seed: sized by benchmarks/preset_memory.py (FLAN-T5-large LoRA, worst case about
    # 2 GiB per 640-token example): 24 x 2 keeps the seed's 48 examples per step under 80 GB.
    "h100": {"optim": {"batch_size": 24, "gradient_accumulation_steps": 2}},
}


# The `tiny` model trains on CPU in under a minute; the seed's FLAN-T5-large schedule (1000 warmup
# steps, 1000-step cycles) would never leave warmup there. On the bundled sample the defaults give
# 100 steps in all (`chef-genius train --plan`): warmup 6, then cycles of 32 and 64 steps. Its base model
# is random, so LoRA adapts every linear layer (q and v alone barely move a random model).
# Applied under presets, files and flags.
TINY_PROFILE: dict[str, Any] = {
    "optim": {"epochs": 6, "batch_size": 16, "gradient_accumulation_steps": 1, "learning_rate": 1e-2},
    "lora": {"target_modules": ["all-linear"]},
    "schedule": {"warmup_steps": 6, "first_cycle_steps": 32},
    "eval": {"eval_steps": 20, "max_new_tokens": 128},
    "checkpoint": {"save_steps": 20},
    "logging": {"log_every": 5},
}


def tiny_settings(config: TrainConfig) -> list[str]:
    """The `tiny` model's own settings (`TINY_PROFILE`) in effect in ``config``, as ``key=value``
    (a setting overridden by a preset, file or flag is left out)."""
    applied: list[str] = []
    if config.model.name != "tiny":
        return applied
    for section, values in TINY_PROFILE.items():
        for key, value in values.items():
            if getattr(getattr(config, section), key) == value:
                shown = ",".join(value) if isinstance(value, list) else f"{value:g}" if isinstance(value, float) \
                    else value
                applied.append(f"{section}.{key}={shown}")
    return applied


# The seed's flags, spelled exactly as the seed spells them, and the DESIGN's additions.
# flag -> (dotted config key, value parser or a constant for switches)
FLAGS: dict[str, tuple[str, Any]] = {
    "--model": ("model.name", str),
    "--data": ("data.path", str),
    "--output-dir": ("output_dir", str),
    "--epochs": ("optim.epochs", int),
    "--max-steps": ("optim.max_steps", int),
    "--batch-size": ("optim.batch_size", int),
    "--max-tokens": ("optim.max_tokens", int),
    "--gradient-accumulation-steps": ("optim.gradient_accumulation_steps", int),
    "--learning-rate": ("optim.learning_rate", float),
    "--lora-r": ("lora.r", int),
    "--lora-alpha": ("lora.alpha", int),
    "--label-smoothing": ("optim.label_smoothing", float),
    "--augmentation-prob": ("data.augmentation_prob", float),
    "--reference": ("data.reference", True),
    "--eval-steps": ("eval.eval_steps", int),
    "--resume": ("checkpoint.resume", str),
    "--resume-changed": ("checkpoint.resume_changed", True),
    "--preset": ("preset", str),
    "--report-to": ("logging.report_to", lambda text: [s.strip() for s in text.split(",") if s.strip()]),
    "--seed": ("seed", int),
    "--disable-lora": ("lora.enabled", False),
    "--disable-cosine-schedule": ("schedule.cosine", False),
    "--disable-gradient-noise": ("gradient_noise.enabled", False),
    "--fsdp": ("model.fsdp", True),
    "--decoding": ("eval.decoding", str),
    "--preference": ("preference.pairs", str),
    "--dpo-beta": ("preference.beta", float),
    "--dpo-sft-weight": ("preference.sft_weight", float),
}


def build_config(file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Resolve a `TrainConfig` from defaults, preset, a YAML file and flag overrides.

    Args:
        file: a YAML file whose nested keys mirror `TrainConfig`.
        overrides: dotted keys to values (from flags), e.g. ``{"optim.epochs": 3}``.

    Raises:
        UserError: unreadable file, unknown keys, wrong types or invalid values.
    """
    tree: dict[str, Any] = {}
    if file is not None:
        tree = _read_yaml(Path(file))
    for key, value in (overrides or {}).items():
        _set_dotted(tree, key, value)
    preset = tree.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"preset: unknown '{preset}' (choose from {', '.join(PRESETS)})")
        tree = _merge(PRESETS[preset], tree)
    model = tree.get("model")
    if not isinstance(model, dict) or model.get("name", ModelConfig.name) == "tiny":
        tree = _merge(TINY_PROFILE, tree)
    config = _build(TrainConfig, tree, "")
    if config.model.fsdp and config.lora.enabled:
        raise UserError("--fsdp shards full fine-tuning; LoRA adapters are small and train with DDP: "
                        "add --disable-lora or drop --fsdp")
    if config.preference.pairs is not None and config.model.gradient_checkpointing:
        raise UserError("preference tuning runs its forward without dropout (eval mode), where Transformers "
                        "skips activation checkpointing: drop model.gradient_checkpointing")
    if (not config.lora.enabled and config.model.name != "tiny"
            and config.optim.learning_rate >= LORA_LEARNING_RATE):  # a LoRA rate kept from a dumped config, say
        import warnings

        warnings.warn(f"full fine-tuning at learning rate {config.optim.learning_rate:g}, a LoRA rate; "
                      f"{FULL_LEARNING_RATE:g} is the default for full fine-tuning (--learning-rate)", stacklevel=2)
    if config.output_dir is None:
        config.output_dir = _default_run_dir(config.checkpoint.resume == "auto")
    return config


def _default_run_dir(resume: bool) -> str:
    """A new runs/run-<time> folder, or the newest existing one when resuming."""
    import time

    if resume:
        existing = sorted(Path("runs").glob("run-*"))
        if existing:
            return str(existing[-1])
    return f"runs/run-{time.strftime('%Y%m%d-%H%M%S')}"


def _read_yaml(path: Path) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot be read: {error}") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path}: invalid YAML: {str(error).splitlines()[0]}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: the top level must be a mapping of config sections")
    return loaded


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"{key}: '{part}' is not a section")
    node[last] = value


def _merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    return merged


def _build(cls: type, values: Any, where: str) -> Any:
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise UserError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"{where or 'config'}: unknown key(s) {', '.join(unknown)} "
                        f"(valid: {', '.join(sorted(names))})")
    kwargs = {name: _coerce(value, hints[name], f"{where}{name}") for name, value in values.items()}
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where + ".")
    if origin is Literal:
        if value not in args:
            raise UserError(f"{where}: must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return [_coerce(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected text, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint} at {where}")  # a schema bug, not user input


def to_dict(config: Any) -> dict:
    """The config as plain data (for YAML, JSON and checkpoints)."""
    return dataclasses.asdict(config)


def to_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)
