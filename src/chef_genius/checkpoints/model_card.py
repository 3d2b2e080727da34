"""The README.md of a final folder (`model_card`) and which step's weights it holds, in words
(`weights_note`)."""

from __future__ import annotations

from chef_genius.checkpoints.folder import PREFIX, TrainerState
from chef_genius.config_schema import TrainConfig


def weights_note(state: TrainerState, weights_step: int, keep_best: bool = True) -> str:
    """Which step's weights a final folder holds, in words."""
    if not keep_best and state.best_step is not None and weights_step != state.best_step:
        return (f"step {weights_step}, the last step (eval.keep_best is off; the best val_loss, "
                f"{state.best_val_loss:.4f}, was at step {state.best_step})")
    if state.best_step is not None and weights_step == state.best_step:
        best = f"the best val_loss, {state.best_val_loss:.4f}"
        if weights_step == state.step:
            return f"step {weights_step}, the last step and {best}"
        return (f"step {weights_step} of {state.step}, {best}; the last weights are in "
                f"checkpoints/{PREFIX}{state.step:08d}")
    if state.best_step is None:
        return f"step {weights_step}, the last step (no validation loss was measured)"
    return f"step {weights_step}, the last step (the best checkpoint, step {state.best_step}, could not be used)"


def model_card(config: TrainConfig, state: TrainerState, weights_step: int | None = None) -> str:
    """The README.md of a final folder: what was trained, on what, which step's weights, and
    the target format."""
    kind = "LoRA adapter" if config.lora.enabled else "fine-tuned model"
    weights_step = state.step if weights_step is None else weights_step
    stopped = " (stopped early)" if state.stopped_early else ""
    return (f"# chef-genius {kind}\n\nBase model: `{config.model.name}`. Trained by chef-genius for {state.step} "
            f"optimizer steps{stopped}; best val_loss {state.best_val_loss}.\n\nWeights: "
            f"{weights_note(state, weights_step, config.eval.keep_best)}.\n\nTarget format: `Title: ... || "
            f"Ingredients: a | b || Steps: x | y`; prompt template: `{config.data.templates[0]}`.\n")
