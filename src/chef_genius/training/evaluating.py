"""The trainer's evaluation side: `TrainerEvaluation`, a mixin that `trainer.Trainer` inherits.

Improvement 1 as the loop runs it: `validation_loss` (the token-mean cross-entropy on the
validation split, `validation.validation_loss`), `_evaluate_and_keep_best` (log it, sample
recipes, let `validation.record_validation` decide on early stopping, save the best state), and
`_sample_recipes` (rank 0 generates, `validation.sample_and_log` prints and scores). `_save`
writes a checkpoint through `persistence.RunCheckpoints` unless the newest one already holds
this state (`_state_key`). The methods read the trainer's parts (``self.model``,
``self.state``, ``self.tracker``, ...) that `setup.TrainerSetup` builds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import torch

from chef_genius.training.validation import record_validation, sample_and_log, validation_loss

__all__ = ["TrainerEvaluation"]


class TrainerEvaluation:
    """Validation, early stopping, sample recipes and checkpoints, on the trainer's parts (``self``)."""

    @torch.no_grad()
    def validation_loss(self) -> float | None:
        """Token-mean cross-entropy without label smoothing on the validation split."""
        return validation_loss(self.model, self.val_examples, self.config, self.ranks, self.pad_id, self.family,
                               self.decoder_start_id, self._autocast)

    def _evaluate_and_keep_best(self) -> bool:
        """Validate, log, save the best checkpoint; True when early stopping says stop."""
        state, e = self.state, self.config.eval
        if state.last_eval_step == state.step:  # an epoch that ends on an evaluation step
            return False
        state.last_eval_step = state.step
        started = time.perf_counter()
        val_loss = self.validation_loss()
        if val_loss is None:
            return False
        self.tracker.log({"val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50.0)),
                          "eval/loss_seconds": time.perf_counter() - started}, state.step)
        if e.generate_samples:
            started = time.perf_counter()
            self._sample_recipes()
            self.tracker.log({"eval/sample_seconds": time.perf_counter() - started}, state.step)
        verdict = record_validation(state, val_loss, e.min_delta, e.patience)
        state.stopped_early = verdict.stop  # saved with the state: a resume does not train on
        if verdict.best:
            self._save()
        return verdict.stop

    def _sample_recipes(self) -> None:
        """Sample recipes on rank 0 (the others wait); not under FSDP, where rank 0 cannot run
        the sharded model alone (`generate` on the saved model can)."""
        if not self.sharded and self.is_main:
            e = self.config.eval
            prompts = list(e.sample_prompts) + self.val_prompts[: e.num_validation_samples]
            # The random `tiny` model's samples are noise: the demo prints only the last set.
            self.last_samples = sample_and_log(self.model_for_saving, self.tokenizer, self.family, prompts, e,
                                               self.state.step, self.run_dir, self.tracker, self._autocast,
                                               echo=self.config.model.name != "tiny")
        self.ranks.barrier()

    def _state_key(self) -> str:
        """The trainer state without its RNG captures: equal keys, equal checkpoints."""
        saved = {k: v for k, v in dataclasses.asdict(self.state).items() if k not in ("python_rng", "numpy_rng")}
        return json.dumps(saved, sort_keys=True, default=str)

    def _save(self) -> None:
        """A checkpoint of this state, unless the newest one already holds it."""
        key = self._state_key()
        if key == getattr(self, "_saved_state", None):
            return
        self.checkpoints.save(self.state, self.model, self.model_for_saving, self.optimizer, self.sharded,
                              self.noise_generator, self.tokenizer)
        self._saved_state = key
