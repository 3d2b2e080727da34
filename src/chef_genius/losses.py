"""Label-smoothed cross-entropy (Szegedy et al. 2016), computed in chunks.

Equal to ``torch.nn.functional.cross_entropy(logits, labels, label_smoothing=eps,
ignore_index=-100)``: targets are (1 - eps) one-hot + eps / K uniform over the K-token
vocabulary; positions labelled -100 are ignored. No one-hot matrix is built, and fp32 exists for
one chunk of rows at a time: each chunk's gradient is computed during the forward pass and kept
in the logits' dtype, so autograd never holds fp32 logits for the whole batch.
"""

from __future__ import annotations

import contextlib

import torch

IGNORE_INDEX = -100
CHUNK_ROWS = 4096


class _SmoothedCrossEntropySum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, eps: float, chunk_rows: int):
        vocab = logits.shape[-1]
        grad = torch.empty_like(logits) if logits.requires_grad else None
        smoothed = torch.zeros((), dtype=torch.float32, device=logits.device)
        nll = torch.zeros((), dtype=torch.float32, device=logits.device)
        for start in range(0, logits.shape[0], chunk_rows):
            scores = logits[start:start + chunk_rows].float()
            target = labels[start:start + chunk_rows]
            real = (target != IGNORE_INDEX).float()
            safe_target = target.clamp_min(0)[:, None]
            log_probs = scores - torch.logsumexp(scores, dim=-1, keepdim=True)
            token_nll = -log_probs.gather(1, safe_target).squeeze(1)
            uniform = -log_probs.mean(dim=-1)
            nll += (token_nll * real).sum()
            smoothed += (((1 - eps) * token_nll + eps * uniform) * real).sum()
            if grad is not None:
                # d/dscores of the smoothed loss: softmax - (1 - eps) * one_hot - eps / K
                chunk_grad = log_probs.exp_().sub_(eps / vocab)
                chunk_grad.scatter_add_(1, safe_target, torch.full_like(token_nll[:, None], -(1 - eps)))
                grad[start:start + chunk_rows] = chunk_grad.mul_(real[:, None])
        ctx.mark_non_differentiable(nll)
        ctx.save_for_backward(grad)
        return smoothed, nll

    @staticmethod
    def backward(ctx, grad_smoothed: torch.Tensor, _grad_nll: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_smoothed.to(grad.dtype), None, None, None


def smoothed_cross_entropy_sums(logits: torch.Tensor, labels: torch.Tensor, eps: float,
                                chunk_rows: int = CHUNK_ROWS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed smoothed loss and summed plain NLL over the real target tokens.

    Args:
        logits: [..., K] scores in any float dtype.
        labels: [...] token ids, -100 where ignored.
        eps: label smoothing epsilon.
        chunk_rows: rows turned into fp32 at a time.

    Returns:
        (smoothed loss sum, NLL sum, number of real tokens), all tensors on the logits' device
        (nothing is read back to the host, so the step can be captured in a CUDA graph). Only
        the first is differentiable.
        Divided by this batch's token count, the smoothed sum equals torch's reference mean.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_labels = labels.reshape(-1)
    smoothed, nll = _SmoothedCrossEntropySum.apply(flat_logits, flat_labels, eps, chunk_rows)
    return smoothed, nll, (flat_labels != IGNORE_INDEX).sum()


def decoder_inputs(labels: torch.Tensor, pad_id: int, decoder_start_id: int | None) -> torch.Tensor:
    """A seq2seq decoder's inputs: the labels shifted right behind the decoder start token."""
    decoder_input_ids = labels.new_full(labels.shape, pad_id)
    decoder_input_ids[:, 0] = pad_id if decoder_start_id is None else decoder_start_id
    decoder_input_ids[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE_INDEX, pad_id)
    return decoder_input_ids


@torch.no_grad()
def nll_sums(model, collator, batches: list[list[int]], family, pad_id: int,
             decoder_start_id: int | None, autocast=contextlib.nullcontext) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed plain NLL and real-token count over planned batches (``collator`` turns a batch's
    positions into model inputs; ``family``: its `chef_genius.families.ModelFamily`); the model
    runs in eval mode and is put back as it was."""
    device = next(model.parameters()).device
    total = torch.zeros((), device=device)
    count = torch.zeros((), device=device)
    was_training = model.training
    model.eval()
    for positions in batches:
        batch = {k: v.to(device) for k, v in collator(positions).items()}
        with autocast():
            _, nll, n = family.loss_sums(model, batch, 0.0, pad_id, decoder_start_id)
        total += nll
        count += n
    model.train(was_training)
    return total, count


class TokenObjective:
    """The default training objective: the label-smoothed cross-entropy of the targets, a mean
    over the step's real target tokens (`units`). `preference.PreferenceObjective` is the other."""

    metric_names: tuple[str, ...] = ()

    def __init__(self, family, pad_id: int, decoder_start_id: int | None):
        self.family, self.pad_id, self.decoder_start_id = family, pad_id, decoder_start_id

    @staticmethod
    def units(batch: dict[str, torch.Tensor]) -> int:
        """Real target tokens in the batch."""
        return int((batch["labels"] != IGNORE_INDEX).sum())

    def loss_sums(self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
                  eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(smoothed loss sum, NLL sum, no extra metric sums)."""
        smoothed, nll, _ = self.family.loss_sums(model, batch, eps, self.pad_id, self.decoder_start_id)
        return smoothed, nll, smoothed.new_zeros(0)
