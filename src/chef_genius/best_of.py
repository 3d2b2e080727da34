"""Best-of-N: sample N recipes for a request and keep the one a cook is likeliest to make.

Candidates are ranked by the cookable verdict (`chef_genius.cookable`: cookable first, then the
fewest failed checks), then the usable verdict, then the model's own length-normalized
log-likelihood of the text (`mean_logprobs`, teacher-forced, no temperature). N = 1 is plain
sampling; the cost is N times the generation plus one scoring forward pass per candidate.
"""

from __future__ import annotations

import torch

from chef_genius.cookable import Cookable
from chef_genius.families import ModelFamily
from chef_genius.usability import Usability


def rank_key(verdict: Cookable, checks: Usability, mean_logprob: float) -> tuple:
    """Larger is better."""
    return (verdict.cookable, -len(verdict.failed), checks.usable, mean_logprob)


def judged_key(verdict: Cookable, judged: tuple[float, bool]) -> tuple:
    """With the LM judge (`chef_genius.lm_judge`; ``judged``: its P(real) and whether it passes):
    passed by the verdict and the judge first, then by the verdict, then the fewest failed checks,
    then the judge's P(real). Larger is better."""
    probability, passes = judged
    return (verdict.cookable and passes, verdict.cookable, -len(verdict.failed), probability)


def best_index(keys: list[tuple]) -> int:
    """The first candidate with the largest key (ties keep sampling order)."""
    return max(range(len(keys)), key=lambda i: (keys[i], -i))


LOGITS_BUDGET = 1 << 29  # bytes of float32 logits one scoring pass may hold (the vocabulary times the tokens)


def score_batches(lengths, vocab: int, batch_size: int, budget: int) -> list[list[int]]:
    """Example positions in batches of similar length (longest first), each at most ``batch_size``
    rows and, past one row, at most ``budget`` bytes of float32 logits (rows x longest x ``vocab``
    x 4): a large vocabulary's logits for 64 long rows would take the CPU's memory."""
    order = sorted(range(len(lengths)), key=lambda i: -int(lengths[i]))
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and \
                (len(batches[-1]) + 1) * int(lengths[batches[-1][0]]) * vocab * 4 <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


@torch.no_grad()
def mean_logprobs(model, tokenizer, family: ModelFamily, prompts: list[str], texts: list[str], batch_size: int = 16,
                  max_source: int = 512, max_target: int = 512) -> list[float]:
    """Mean log-probability per target token of each text given its prompt (as trained: the same
    encoding, the end token included), in batches of similar length whose logits fit `LOGITS_BUDGET`."""
    from chef_genius.dataset.collate import Collator, tokenize_examples
    from chef_genius.losses import IGNORE_INDEX

    pad_id = tokenizer.pad_token_id
    examples = tokenize_examples(tokenizer, prompts, texts, max_source, max_target, family)
    collator = Collator(examples, pad_id, family)
    device = next(model.parameters()).device
    start_id = family.decoder_start(model, pad_id)
    was_training = model.training
    model.eval()
    out = [0.0] * len(texts)
    vocab = int(getattr(model.config, "vocab_size", 0) or 1)  # unknown: the budget cannot bind
    for index in score_batches(examples.lengths(), vocab, batch_size, LOGITS_BUDGET):
        batch = {k: v.to(device) for k, v in collator(index).items()}
        logits, labels = family.target_logits(model, batch, pad_id, start_id)
        mask = labels != IGNORE_INDEX
        # the label's logit minus the log of the partition: no second vocabulary-wide copy of the logits
        picked = logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1).float() - \
            torch.logsumexp(logits.float(), dim=-1)
        for i, score in zip(index, ((picked * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist(), strict=True):
            out[i] = score
    model.train(was_training)
    return out


def pick(texts: list[str], stopped: list[bool], logprobs: list[float], request_foods) -> int:
    """Index of the best candidate (`rank_key`) among generated texts for one request."""
    from chef_genius.cookable import check_cookable
    from chef_genius.recipe import parse_recipe_text
    from chef_genius.usability import check

    keys = []
    for text, done, logprob in zip(texts, stopped, logprobs, strict=True):
        recipe = parse_recipe_text(text).recipe
        keys.append(rank_key(check_cookable(recipe, request_foods, done), check(recipe, done), logprob))
    return best_index(keys)
