"""Preference tuning: Direct Preference Optimization (Rafailov et al. 2023, "Direct Preference
Optimization: Your Language Model is Secretly a Reward Model").

A preference pair is a prompt, a chosen recipe and a rejected one: typically the real recipe of a
training prompt and the model's own sample of it that the cookable verdict rejects
(`chef_genius.preference_pairs` writes them). With the summed log-probabilities of each recipe's
tokens (the prompt masked) under the policy (``logp``) and under the frozen starting model
(``ref``), the loss of a pair is

    -log sigmoid(beta * ((logp_c - ref_c) - (logp_r - ref_r)))

plus, when ``sft_weight`` > 0, that weight times the chosen recipe's token-mean cross-entropy. The
reference log-probabilities are computed once before training (`training.preference_data`) and
travel with the batches, so no second model is held in memory while training.

Here: the pairs file (`read_pairs`), the loss (`dpo_losses`), the recipes' log-probabilities
(`sequence_logps`) and the objective the training loop calls (`PreferenceObjective`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from chef_genius.errors import UserError, read_user_text
from chef_genius.losses import IGNORE_INDEX, smoothed_cross_entropy_sums

PAIR_KEYS = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str


def read_pairs(path: str | Path) -> list[PreferencePair]:
    """The pairs of a JSONL file: one object per line with text ``prompt``, ``chosen`` and
    ``rejected`` (other keys are kept out); blank lines are skipped.

    Raises:
        UserError: a missing or unreadable file, a line that is not such an object, or no pair.
    """
    path = Path(path)
    lines = read_user_text(path, "preference pairs file").splitlines()
    pairs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as error:
            raise UserError(f"{path}:{number}: invalid JSON ({error})") from None
        if not isinstance(item, dict):
            raise UserError(f"{path}:{number}: expected an object with {', '.join(PAIR_KEYS)}")
        for key in PAIR_KEYS:
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise UserError(f"{path}:{number}: '{key}' must be non-empty text")
        if item["chosen"].strip() == item["rejected"].strip():
            raise UserError(f"{path}:{number}: chosen and rejected are the same text (nothing to prefer)")
        pairs.append(PreferencePair(item["prompt"], item["chosen"], item["rejected"]))
    if not pairs:
        raise UserError(f"{path}: holds no preference pairs")
    return pairs


def pairs_digest(path: str | Path) -> str:
    """The sha256 of the pairs file: a resume, and the stored reference log-probabilities, check it."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dpo_losses(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
               reference_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair DPO losses and margins.

    Args:
        policy_chosen, policy_rejected: [pairs] summed log-probabilities under the trained model.
        reference_chosen, reference_rejected: the same under the starting model.
        beta: the scale of the log-ratios.

    Returns:
        (losses, margins): ``margins = beta * ((logp_c - ref_c) - (logp_r - ref_r))`` and
        ``losses = -log sigmoid(margins)``; a margin above 0 means the policy prefers the chosen
        recipe more than the reference does.
    """
    margins = beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))
    return -F.logsigmoid(margins), margins


def sequence_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor], family, pad_id: int,
                   decoder_start_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of each row's target tokens (labels other than -100: the prompt
    of a causal row is masked) and each row's count of them.

    Each row goes through the chunked cross-entropy (`losses.smoothed_cross_entropy_sums`, no
    smoothing), whose gradient is formed during the forward in the logits' dtype: fp32 log-softmax
    is never held for the whole batch.
    """
    logits, labels = family.target_logits(model, batch, pad_id, decoder_start_id)  # `families.ModelFamily`
    nll = torch.stack([smoothed_cross_entropy_sums(logits[i], labels[i], 0.0)[0] for i in range(labels.shape[0])])
    return -nll, (labels != IGNORE_INDEX).sum(dim=1)


class PreferenceObjective:
    """DPO as the training loop's objective: ``loss_sums`` of a batch of pairs (its chosen rows,
    then its rejected rows, with the pairs' ``reference_logps`` in the same order), divided by
    the step's pairs (`units`).

    The policy runs without dropout (eval mode), as the reference log-probabilities were
    computed: at the first step policy and reference agree and every margin is 0.
    """

    metric_names = ("preference/loss", "preference/margin", "preference/accuracy")

    def __init__(self, beta: float, sft_weight: float, family, pad_id: int, decoder_start_id: int | None,
                 reference: torch.Tensor):
        self.beta, self.sft_weight = beta, sft_weight
        self.family, self.pad_id, self.decoder_start_id = family, pad_id, decoder_start_id
        self.reference = reference  # [pairs, 2]: chosen, rejected

    @staticmethod
    def units(batch: dict[str, torch.Tensor]) -> int:
        """Pairs in the batch: the loss is a mean over pairs."""
        return int(batch["reference_logps"].shape[0]) // 2

    def loss_sums(self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
                  eps: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(summed loss, summed chosen token-mean NLL, [DPO loss, margin, correct] sums) over the
        batch's pairs; only the first is differentiable. ``eps`` (label smoothing) is not used."""
        was_training = model.training
        model.eval()
        try:
            logps, tokens = sequence_logps(model, batch, self.family, self.pad_id, self.decoder_start_id)
        finally:
            model.train(was_training)
        pairs = logps.shape[0] // 2
        reference = batch["reference_logps"].to(logps)
        losses, margins = dpo_losses(logps[:pairs], logps[pairs:], reference[:pairs], reference[pairs:], self.beta)
        chosen_nll = -logps[:pairs] / tokens[:pairs].clamp_min(1)
        total = losses.sum() + self.sft_weight * chosen_nll.sum() if self.sft_weight else losses.sum()
        extras = torch.stack([losses.sum(), margins.sum(), (margins > 0).float().sum()]).detach()
        return total, chosen_nll.detach().sum(), extras
