"""The token cache and memory-mapped examples (issue 14): the same token ids as tokenizing every
example directly, a few bytes a token, reused by later runs, rebuilt when what it depends on
changes, never read half-built."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from chef_genius.augment import ExampleDraws, canonical_prompt, paraphrase_recipe, training_prompt
from chef_genius.config import build_config
from chef_genius.dataset import epochs as epochs_module
from chef_genius.dataset import token_cache as tc
from chef_genius.dataset.collate import batch_count, load_split, plan_batches
from chef_genius.dataset.epochs import EpochBuilder
from chef_genius.families import CAUSAL, SEQ2SEQ
from chef_genius.prepare import PrepareOptions, prepare
from chef_genius.recipe import serialize
from chef_genius.training.validation import validation_examples
from tests.conftest import RECIPENLG


@dataclass(frozen=True)
class OneRank:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        pass


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The RecipeNLG-layout test file (Wikibooks recipes, some without NER), prepared."""
    folder = tmp_path_factory.mktemp("cache") / "prepared"
    prepare([RECIPENLG], folder, PrepareOptions(val_fraction=0.2, test_fraction=0.0, progress=False, workers=0))
    return folder


def fast(raw):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tokenizer(t5_tokenizer):
    return fast(t5_tokenizer)


def config(data: Path, **overrides):
    settings = {"data.path": str(data), "model.max_target_tokens": 96, "model.max_source_tokens": 24,
                "optim.epochs": 2, "data.augmentation_prob": 0.5}
    return build_config(None, {**settings, **overrides})


def test_cache_holds_the_direct_encoding_of_every_target(tmp_path, data, tokenizer, monkeypatch):
    table = load_split(data, "train")
    direct = SEQ2SEQ.encode_targets(tokenizer, [serialize(table.recipe(i)) for i in range(len(table))], 96)
    inputs = tc.cache_inputs(tokenizer, data / "train.arrow", 96, SEQ2SEQ)
    in_process = tc.open_or_build(tmp_path / "a", inputs, data / "train.arrow", tokenizer, 96, SEQ2SEQ, workers=0)
    assert [in_process.target(i).tolist() for i in range(len(table))] == direct
    # Two worker processes over chunks of 7 rows give the same ids, in order.
    monkeypatch.setattr(tc, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr(tc, "CHUNK_ROWS", 7)
    pooled = tc.open_or_build(tmp_path / "b", inputs, data / "train.arrow", tokenizer, 96, SEQ2SEQ, workers=2)
    assert np.array_equal(pooled.ids, in_process.ids) and np.array_equal(pooled.offsets, in_process.offsets)
    assert pooled.built and isinstance(pooled.ids, np.memmap)
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())
    assert meta["rows"] == len(table) and meta["tokens"] == sum(map(len, direct))


def test_cache_costs_at_most_ten_bytes_a_token_on_disk(tmp_path, data, tokenizer):
    inputs = tc.cache_inputs(tokenizer, data / "train.arrow", 512, SEQ2SEQ)
    cache = tc.open_or_build(tmp_path / "c", inputs, data / "train.arrow", tokenizer, 512, SEQ2SEQ, workers=0)
    on_disk = sum(f.stat().st_size for f in (tmp_path / "c").iterdir() if f.name != "meta.json")
    tokens = len(cache.ids)
    assert tokens > 20_000
    assert on_disk / tokens <= 10
    assert (tmp_path / "c" / "ids.bin").stat().st_size == 4 * tokens  # int32, nothing else per token


def reference_epoch(table, tokenizer, cfg, epoch: int, rows: np.ndarray):
    """The examples as chef-genius built them before the cache: every target of the split
    tokenized up front as lists, prompts and paraphrased targets per example."""
    data, model = cfg.data, cfg.model
    targets = SEQ2SEQ.encode_targets(tokenizer, [serialize(table.recipe(i)) for i in range(len(table))],
                             model.max_target_tokens)
    draws = ExampleDraws.for_epoch(cfg.seed, epoch, len(table)).values
    prompts, chosen = [], []
    for row in rows.tolist():
        recipe = table.recipe(row)
        drawn = training_prompt(recipe.title, list(recipe.ner), draws[row], data.templates, data.mixed_templates,
                                data.augmentation_prob)
        prompts.append(drawn.prompt)
        chosen.append(SEQ2SEQ.encode_targets(tokenizer, [serialize(paraphrase_recipe(recipe))],
                                             model.max_target_tokens)[0]
                      if drawn.augmentation == "paraphrase" else targets[row])
    return SEQ2SEQ.encode_sources(tokenizer, prompts, model.max_source_tokens), chosen


def test_epochs_and_validation_have_the_token_ids_of_direct_tokenization(tmp_path, data, tokenizer, monkeypatch):
    monkeypatch.setattr(epochs_module, "CHUNK_ROWS", 16)  # several chunks, each appended to flat arrays
    cfg = config(data)
    caches = {s: tc.shared_cache(OneRank(), data, s, tokenizer, 96, SEQ2SEQ, workers=0) for s in ("train", "val")}
    table = load_split(data, "train")
    builder = EpochBuilder(table, caches["train"], tokenizer, cfg, SEQ2SEQ, 1)
    for epoch in range(2):
        built = builder.build(epoch)
        examples = built.examples
        sources, targets = reference_epoch(table, tokenizer, cfg, epoch, built.selection.indices)
        assert [examples.source(i).tolist() for i in range(len(examples))] == sources
        assert [examples.target(i).tolist() for i in range(len(examples))] == targets
        assert examples.lengths().tolist() == [len(s) + len(t) for s, t in zip(sources, targets, strict=True)]
        assert len(examples.extra_target_ids) > 0 and built.augmented > 0  # paraphrased targets were rewritten
    val = load_split(data, "val")
    v = validation_examples(val, caches["val"], tokenizer, cfg, SEQ2SEQ)
    recipes = [val.recipe(i) for i in range(len(val))]
    assert [v.source(i).tolist() for i in range(len(v))] == SEQ2SEQ.encode_sources(
        tokenizer, [canonical_prompt(cfg.data.templates, r.title, r.ner) for r in recipes], 24)
    assert [v.target(i).tolist() for i in range(len(v))] == SEQ2SEQ.encode_targets(
        tokenizer, list(map(serialize, recipes)), 96)


def test_an_epoch_holds_about_a_byte_a_token_in_memory(tmp_path, data, tokenizer):
    cfg = config(data, **{"model.max_target_tokens": 512})
    cache = tc.shared_cache(OneRank(), data, "train", tokenizer, 512, SEQ2SEQ, workers=0)
    built = EpochBuilder(load_split(data, "train"), cache, tokenizer, cfg, SEQ2SEQ, 1).build(1)
    tokens = int(built.examples.lengths().sum())
    # Prompts (4 bytes a token), per-example offsets and the augmented targets; the canonical
    # targets stay in the memory-mapped cache (as Python lists they took ~148 bytes a token).
    assert built.examples.nbytes() / tokens < 2.0
    sent = pickle.dumps(built.examples)
    assert len(sent) < built.examples.nbytes() + 4096  # DataLoader workers get the file's name, not its tokens
    back = pickle.loads(sent)
    assert isinstance(back.target_ids, np.memmap)
    assert all(np.array_equal(back.target(i), built.examples.target(i)) for i in range(len(back)))


def test_a_second_run_reuses_the_cache(data, tokenizer, monkeypatch):
    calls = []
    encode = tc._encode_chunk
    monkeypatch.setattr(tc, "_encode_chunk", lambda task: calls.append(task) or encode(task))
    first = tc.shared_cache(OneRank(), data, "val", tokenizer, 80, SEQ2SEQ, workers=0)
    assert first.folder.parent == data / "token-cache"  # chef-genius made DATA: the cache lives there
    ids = first.folder / "ids.bin"
    before, built_calls = ids.stat().st_mtime_ns, len(calls)
    assert first.built and built_calls > 0
    again = tc.shared_cache(OneRank(), data, "val", tokenizer, 80, SEQ2SEQ, workers=0)
    other_rank = tc.shared_cache(OneRank(rank=1, world=2), data, "val", tokenizer, 80, SEQ2SEQ, workers=0)
    assert again.folder == first.folder == other_rank.folder
    assert not again.built and not other_rank.built and len(calls) == built_calls
    assert ids.stat().st_mtime_ns == before


def test_what_the_ids_depend_on_changes_the_key(tmp_path, data, tokenizer, byte_tokenizer):
    def key(tok=tokenizer, max_target=96, family=SEQ2SEQ, split="train"):
        return tc.cache_key(tc.cache_inputs(tok, data / f"{split}.arrow", max_target, family))

    base = key()
    assert key() == base  # stable
    assert len({base, key(max_target=97), key(family=CAUSAL), key(tok=fast(byte_tokenizer)), key(split="val")}) == 5
    chat = fast(pickle.loads(pickle.dumps(tokenizer._tokenizer)))
    chat.chat_template = "{{ messages[0]['content'] }}"
    assert key(tok=chat) != base
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "train.arrow").write_bytes((data / "train.arrow").read_bytes())
    os.utime(copy / "train.arrow", ns=(0, (data / "train.arrow").stat().st_mtime_ns + 1))
    assert tc.cache_key(tc.cache_inputs(tokenizer, copy / "train.arrow", 96, SEQ2SEQ)) != base


def test_an_interrupted_build_is_never_used(tmp_path, data, tokenizer, monkeypatch):
    inputs = tc.cache_inputs(tokenizer, data / "val.arrow", 64, SEQ2SEQ)
    folder = tmp_path / "token-cache" / tc.cache_key(inputs)
    # A build killed outright (its process is gone) left a partial folder with half its ids.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    partial = folder.with_name(f"{tc.PARTIAL}{folder.name}-{tc.socket.gethostname()}-{int(dead.stdout)}")
    partial.mkdir(parents=True)
    (partial / "ids.bin").write_bytes(b"\x07" * 12)
    # A build interrupted in this process leaves nothing behind.
    monkeypatch.setattr(tc, "_encode_chunk", lambda task: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        tc.open_or_build(folder, inputs, data / "val.arrow", tokenizer, 64, SEQ2SEQ, workers=0)
    assert not folder.exists() and not partial.exists()
    assert list(folder.parent.iterdir()) == []
    monkeypatch.undo()
    cache = tc.open_or_build(folder, inputs, data / "val.arrow", tokenizer, 64, SEQ2SEQ, workers=0)
    table = load_split(data, "val")
    assert cache.target(0).tolist() == SEQ2SEQ.encode_targets(tokenizer, [serialize(table.recipe(0))], 64)[0]
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_a_folder_chef_genius_did_not_make_gets_no_cache(tmp_path, data, tokenizer, monkeypatch):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for name in ("train.arrow", "val.arrow"):
        (foreign / name).write_bytes((data / name).read_bytes())
    monkeypatch.setenv("CHEF_GENIUS_CACHE", str(tmp_path / "user-cache"))
    cache = tc.shared_cache(OneRank(), foreign, "val", tokenizer, 64, SEQ2SEQ, workers=0)
    assert cache.folder.parent == tmp_path / "user-cache" / "token-cache"
    assert sorted(p.name for p in foreign.iterdir()) == ["train.arrow", "val.arrow"]


@pytest.mark.parametrize("examples", [1, 7, 12, 95, 96, 97, 1000, 5000])
@pytest.mark.parametrize("batch_size,world", [(1, 1), (4, 1), (12, 2), (8, 3)])
def test_batch_count_is_the_planned_count(examples, batch_size, world):
    lengths = np.random.default_rng(examples).integers(5, 400, examples)
    for rank in range(world):
        assert len(plan_batches(lengths, 3, 1, batch_size, rank=rank, world=world)) == batch_count(
            examples, batch_size, world)
