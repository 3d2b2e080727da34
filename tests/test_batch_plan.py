"""The array forms of an epoch's set-up give exactly what the per-example code gave: batch plans
(exact resume depends on them), prompts and token ids."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from chef_genius.augment import ExampleDraws, training_prompt, training_prompts
from chef_genius.config_schema import SEED_TEMPLATES
from chef_genius.dataset.batch_plan import BatchPlan, plan_batches
from chef_genius.encoding import USER_TOKENIZER_SETTING, token_ids, tokenizer_threads
from tests.harness.tiny_causal import chat_tokenizer


def list_plan(lengths, seed, epoch, batch_size, max_tokens=None, shuffle=True, rank=0, world=1, pool_batches=64):
    """The planner as it was, a list per batch: the reference."""
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order)
    order = np.asarray(order, dtype=np.int64)
    mean_length = max(float(lengths.mean()) if len(lengths) else 1.0, 1.0)
    per_batch = batch_size if max_tokens is None else max(1, int(max_tokens / mean_length))
    batches = []
    for start in range(0, len(order), max(per_batch * pool_batches, 1)):
        chunk = order[start:start + max(per_batch * pool_batches, 1)]
        batch, longest = [], 0
        for position in chunk[np.argsort(lengths[chunk], kind="stable")].tolist():
            length = int(lengths[position])
            if batch and ((max_tokens is None and len(batch) >= batch_size)
                          or (max_tokens is not None and (len(batch) + 1) * max(longest, length) > max_tokens)):
                batches.append(batch)
                batch, longest = [], 0
            batch.append(position)
            longest = max(longest, length)
        if batch:
            batches.append(batch)
    if shuffle:
        rng.shuffle(batches)
    return batches[rank::world][:len(batches) // world] if world > 1 else batches


@pytest.mark.parametrize("size", [0, 1, 7, 300, 1000])
@pytest.mark.parametrize(("batch_size", "max_tokens"), [(1, None), (3, None), (8, None), (4, 700), (1, 2048)])
def test_plans_are_the_list_planners(size, batch_size, max_tokens):
    lengths = np.random.default_rng(size).integers(1, 500, size=size)
    for shuffle, rank, world in [(True, 0, 1), (False, 0, 1), (True, 1, 3), (True, 0, 2)]:
        plan = plan_batches(lengths, 5, "1.0.2", batch_size, max_tokens, shuffle, rank, world, pool_batches=4)
        assert list(plan) == list_plan(lengths, 5, "1.0.2", batch_size, max_tokens, shuffle, rank, world, 4)


def test_a_plan_reads_as_a_list_of_batches():
    lengths = np.random.default_rng(0).integers(1, 50, size=41)
    plan, listed = plan_batches(lengths, 1, 0, 4), list_plan(lengths, 1, 0, 4)
    assert plan == listed and plan[3] == listed[3] and plan[-1] == listed[-1] and len(plan) == len(listed)
    assert list(plan[2:7]) == listed[2:7] and list(plan[1::3]) == listed[1::3]
    rows = np.arange(100, 141)
    assert list(plan.mapped(rows)) == [[int(rows[p]) for p in b] for b in listed]
    assert list(BatchPlan.join([plan[:2], plan.mapped(rows)[5:6]])) == listed[:2] + [[int(rows[p]) for p in listed[5]]]
    with pytest.raises(IndexError):
        plan[len(listed)]


def test_prompts_drawn_as_arrays_are_each_examples_prompt():
    titles = ["Soup", "Lemon Chicken", "Rice", "Tart"] * 50
    names = [["leek", "potato"], ["chicken", "lemon", "rice"], [], ["apple"] * 8] * 50
    draws = ExampleDraws.for_epoch(3, 1, len(titles)).values
    for mixed, probability in [(True, 0.0), (False, 0.0), (True, 0.5), (True, 1.0)]:
        prompts, kinds = training_prompts(titles, names, draws, SEED_TEMPLATES, mixed, probability)
        each = [training_prompt(t, n, d, SEED_TEMPLATES, mixed, probability)
                for t, n, d in zip(titles, names, draws, strict=True)]
        assert prompts == [p.prompt for p in each] and kinds == [p.augmentation for p in each]


def test_backend_ids_are_the_tokenizers_ids():
    texts = ["Create a recipe: tomato soup", "", "  two  spaces ", "<|im_end|> in text", "é" * 50]
    tokenizer = chat_tokenizer(texts * 20)
    for special in (True, False):
        assert token_ids(tokenizer, texts, special) == tokenizer(texts, add_special_tokens=special)["input_ids"]
    assert token_ids(tokenizer, [], True) == []


def test_tokenizer_threads_are_on_only_inside_and_shared_among_local_ranks(monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.delenv(USER_TOKENIZER_SETTING, raising=False)
    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with tokenizer_threads():
        assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
        assert os.environ["RAYON_NUM_THREADS"] == str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    with pytest.raises(RuntimeError), tokenizer_threads():  # restored however the block ends
        raise RuntimeError
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    monkeypatch.setenv(USER_TOKENIZER_SETTING, "false")  # the user's own setting wins
    with tokenizer_threads():
        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
