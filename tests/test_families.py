"""Model families (`chef_genius.families`): each provides every member of `ModelFamily`, lays a
batch out and computes its loss as its models are trained, and no signature in the package takes
a ``causal`` flag any more."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from chef_genius.families import CAUSAL, FAMILIES, SEQ2SEQ, ModelFamily, family_of
from chef_genius.families.padding import padded_prompts
from chef_genius.losses import IGNORE_INDEX

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "chef_genius"
MEMBERS = sorted(name for name in {*ModelFamily.__annotations__, *vars(ModelFamily)}
                 if not name.startswith("_"))


@pytest.mark.parametrize("family", FAMILIES.values(), ids=FAMILIES)
def test_every_family_has_every_member(family):
    missing = [name for name in MEMBERS if not hasattr(family, name)]
    assert not missing
    for name in MEMBERS:
        declared = getattr(ModelFamily, name, None)
        if inspect.isfunction(declared):
            assert inspect.signature(getattr(type(family), name)).parameters.keys() == \
                inspect.signature(declared).parameters.keys(), name


def test_the_family_comes_from_the_model_config_or_the_setting():
    class Config:
        is_encoder_decoder = True

    assert family_of(Config()) is SEQ2SEQ and family_of(object()) is CAUSAL
    assert family_of(Config(), "causal") is CAUSAL and family_of(object(), "seq2seq") is SEQ2SEQ


def test_batches_as_each_family_trains():
    sources, targets = [np.array([5, 6, 7], np.int32)], [np.array([8, 9], np.int32)]
    seq2seq = SEQ2SEQ.collate(sources, targets, 0, 8, 8, fillers=1)
    assert seq2seq["input_ids"].tolist() == [[5, 6, 7, 0, 0, 0, 0, 0], [0] * 8]
    assert seq2seq["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]]
    assert seq2seq["labels"].tolist() == [[8, 9] + [IGNORE_INDEX] * 6, [IGNORE_INDEX] * 8]
    causal = CAUSAL.collate(sources, targets, 0, 8, 4, fillers=0)
    assert causal["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0, 0, 0]]  # one row, the target multiple
    assert causal["labels"].tolist() == [[IGNORE_INDEX] * 3 + [8, 9] + [IGNORE_INDEX] * 3]


def test_prompts_are_padded_on_the_side_each_family_generates_from():
    ids, mask = padded_prompts([[1, 2], [3]], 0, left=True)
    assert CAUSAL.pad_prompts([[1, 2], [3]], 0)[0].tolist() == ids.tolist() == [[1, 2], [0, 3]]
    assert SEQ2SEQ.pad_prompts([[1, 2], [3]], 0)[0].tolist() == [[1, 2], [3, 0]]
    generated = torch.arange(12).reshape(2, 6)
    assert CAUSAL.new_tokens(generated, 2).tolist() == [[2, 3, 4, 5], [8, 9, 10, 11]]
    assert SEQ2SEQ.new_tokens(generated, 2).tolist() == [[1, 2, 3, 4, 5], [7, 8, 9, 10, 11]]


def test_no_signature_takes_a_causal_flag():
    """The family object replaced ``causal: bool`` in every signature of the package."""
    flagged = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                if any(a.arg == "causal" for a in arguments):
                    flagged.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert not flagged


def test_each_family_says_how_the_generation_engine_decodes_it():
    assert (CAUSAL.engine_types, CAUSAL.engine_gpu_types, CAUSAL.decodes_in_slots) == \
        (("llama", "gemma3_text"), ("llama", "gemma3_text"), True)
    assert (SEQ2SEQ.engine_types, SEQ2SEQ.engine_gpu_types, SEQ2SEQ.decodes_in_slots) == (("t5",), ("t5",), False)
