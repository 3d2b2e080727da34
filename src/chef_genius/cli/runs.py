"""The settings a trained run was trained with, read back for the commands that load it: its
templates and token limits."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path


def _run_config(run: Path, folder: Path | None = None) -> dict:
    """The config a run trained with, as plain data: a checkpoint's state, else the run's
    config.yaml (beside the weights or up to two folders above); {} for a bare model or adapter.
    ``folder``: the weights folder loaded for ``run``."""
    import yaml

    places = [p for p in (folder, run) if p is not None]
    for place in places:
        state = place / "trainer_state.json"
        if state.is_file():
            with contextlib.suppress(OSError, ValueError, AttributeError, KeyError, TypeError):
                config = json.loads(state.read_text(encoding="utf-8"))["config"]
                if isinstance(config, dict):
                    return config
    candidates = [c / "config.yaml" for p in places for c in (p, p.parent, p.parent.parent)]
    for candidate in candidates:
        if candidate.is_file():
            with contextlib.suppress(OSError, yaml.YAMLError):
                config = yaml.safe_load(candidate.read_text())
                if isinstance(config, dict):
                    return config
    return {}


def _run_templates(run: Path, folder: Path | None = None) -> list[str]:
    """The templates a run trained with (`_run_config`), else the default ones."""
    from chef_genius.config_schema import SEED_TEMPLATES

    data = _run_config(run, folder).get("data")
    return (data.get("templates") if isinstance(data, dict) else None) or SEED_TEMPLATES


def _run_token_limits(run: Path, folder: Path | None = None) -> tuple[int, int]:
    """(max_source_tokens, max_target_tokens) a run trained with, so that `evaluate`'s loss is
    measured as training's was; 512 / 512 for a model or adapter without a run config."""
    model = _run_config(run, folder).get("model")
    limits = [model.get(key) if isinstance(model, dict) else None for key in ("max_source_tokens",
                                                                               "max_target_tokens")]
    return tuple(value if isinstance(value, int) and value > 0 else 512 for value in limits)


def _run_references(run: Path, folder: Path | None = None):
    """The reference recipes (`chef_genius.retrieval.References`) of a run trained with
    ``data.reference``: its training split, from the data folder it trained on (``data.path``, else
    the sample prepared into the run's ``data``); None for a run without them.

    Raises:
        UserError: the run used references and its training data is no longer where it was.
    """
    config = _run_config(run, folder)
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    if not data.get("reference"):
        return None
    from chef_genius.dataset.table import load_split
    from chef_genius.errors import UserError
    from chef_genius.retrieval import References

    places = [Path(data["path"])] if data.get("path") else [
        c / "data" for p in (folder, run) if p is not None for c in (p, p.parent, p.parent.parent)]
    for place in places:
        if (place / "train.arrow").is_file():
            return References(load_split(place, "train"))
    raise UserError(f"{run} was trained with data.reference: its training data ({places[0]}) is needed to find "
                    "each request's reference recipe, and it is not there")
