"""The generation engine on Gemma 3 (sliding-window layers): token for token what
`transformers.generate` writes, its sliding mask Transformers' overlay, on a GPU through its
CUDA-graph steps, and the features the engine lacks sent to Transformers."""

from __future__ import annotations

import copy

import pytest
import torch

from chef_genius.families import CAUSAL
from chef_genius.generation import EngineOptions
from chef_genius.inference import DECODING, NEUTRAL
from tests.harness.engine_cases import EXACT, engine_rows, graph_rows_match_transformers, transformers_rows


def gemma_model(window: int = 6):
    """A tiny random Gemma 3 (Gemma 3 270M's layout: sliding-window layers and a full one, one
    key/value head, q/k norms), whose window is short enough for the tests' rows to pass it, with a
    confident head that likes token 1 (the stop) a little."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=8, sliding_window=window,
                              layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                              max_position_embeddings=256, pad_token_id=0, eos_token_id=1, bos_token_id=2,
                              query_pre_attn_scalar=8, attn_implementation="sdpa")
    torch.manual_seed(5)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().clone() * 6)
        model.config.tie_word_embeddings = False
    return model


@pytest.mark.parametrize("preset", ["greedy", "guarded"])
def test_gemma3_with_sliding_window_layers_is_token_identical_to_transformers(preset):
    """Gemma 3's sliding-window layers get a mask of their own (`CausalDecoder._mask`): rows of up
    to 30 new tokens after prompts of 2-17 tokens pass a 6-token window many times over, in one
    left-padded batch, in sorted continuous batches of three, and on the CPU's relaid-out path."""
    from chef_genius.generation import unsupported

    model = gemma_model()
    assert unsupported(model, CAUSAL, NEUTRAL) is None
    generator = torch.Generator().manual_seed(2)
    sources = [[2] + torch.randint(3, 97, (n,), generator=generator).tolist() for n in (5, 12, 1, 9, 16, 7)]
    settings = {**NEUTRAL, **DECODING[preset]}
    expected = transformers_rows(model, sources, 0, [1], settings, 30, CAUSAL)
    assert max(len(s) + len(r) for s, r in zip(sources, expected, strict=True)) > 4 * 6
    for batch, options in ((6, EXACT), (3, EngineOptions(check_every=4)), (3, EngineOptions(cpu_fast=False))):
        got = engine_rows(model, sources, 0, [1], settings, 30, CAUSAL, batch=batch, options=options)
        assert [ids for ids, _ in got] == expected
    wide = copy.deepcopy(model)
    wide.config.sliding_window = 256  # the window never binds: another model, other rows
    assert [ids for ids, _ in engine_rows(wide, sources, 0, [1], settings, 30, CAUSAL, batch=6)] != expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("preset", ["greedy", "guarded"])
def test_gemma3_cuda_graph_path_writes_transformers_greedy_rows(preset):
    """On a GPU: Gemma 3's per-layer-type masks inside captured decode steps, replayed with rows
    refilled between replays, give Transformers' greedy rows past the sliding window (float32)."""
    model = gemma_model().cuda()
    generator = torch.Generator().manual_seed(2)
    sources = [[2] + torch.randint(3, 97, (n,), generator=generator).tolist() for n in (5, 12, 1, 9, 16, 7)]
    graph_rows_match_transformers(model, sources, preset, CAUSAL, batches=(6, 3))


def test_the_sliding_mask_is_transformers_sliding_window_overlay():
    """`CausalDecoder._mask` for a 3-token window, prefill (every query column of a left-padded
    row) and a decode step (one query per row at its own column): the sliding layers' mask is the
    full one and Transformers' `sliding_window_overlay`, element for element; a model without
    sliding layers gets the one tensor."""
    from types import SimpleNamespace

    from transformers.masking_utils import sliding_window_overlay

    from chef_genius.generation.causal import CausalDecoder

    overlay = sliding_window_overlay(3)
    width = 9
    columns = torch.arange(width)
    starts = torch.tensor([0, 4])
    real = columns[None, :] >= starts[:, None]
    allowed = real[:, None, None, :] & (columns[None, None, None, :] <= columns[None, None, :, None])
    decoder = SimpleNamespace(dtype=torch.float32, sliding=3)
    masks = CausalDecoder._mask(decoder, allowed, columns[None, None, :], columns)
    near = torch.tensor([[overlay(0, 0, q, k) for k in range(width)] for q in range(width)])
    assert torch.equal(masks["sliding_attention"] == 0, allowed & near[None, None])
    assert torch.equal(masks["full_attention"] == 0, allowed)
    written = torch.tensor([7, 9])  # each row's columns so far; the query is the last one
    step = (columns[None, :] >= starts[:, None]) & (columns[None, :] < written[:, None])
    masks = CausalDecoder._mask(decoder, step[:, None, None, :], (written - 1)[:, None, None], columns)
    for row in range(2):
        expected = [bool(step[row, k]) and overlay(0, 0, int(written[row]) - 1, k) for k in range(width)]
        assert (masks["sliding_attention"][row, 0, 0] == 0).tolist() == expected
    assert torch.is_tensor(CausalDecoder._mask(SimpleNamespace(dtype=torch.float32, sliding=None), allowed,
                                               columns[None, None, :], columns))


def test_gemma_features_the_engine_lacks_go_to_transformers():
    from chef_genius.generation import unsupported

    model = gemma_model()
    model.config.final_logit_softcapping = 30.0
    assert "soft-capping" in unsupported(model, CAUSAL, NEUTRAL)
