"""The generation engine on T5 (`chef_genius.generation`, the encoder-decoder family): token for
token what `transformers.generate` writes, gated and not, with a LoRA adapter, through
`generate_details`, and on a GPU through its CUDA-graph steps."""

from __future__ import annotations

import pytest
import torch

from chef_genius.families import SEQ2SEQ
from chef_genius.generation import EngineOptions
from chef_genius.inference import DECODING, NEUTRAL, generate_details
from tests.harness.engine_cases import EXACT, PROMPTS, engine_rows, graph_rows_match_transformers, transformers_rows


def t5_model(gated: bool, seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=97, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_decoder_layers=2, num_heads=4,
                      feed_forward_proj="gated-gelu" if gated else "relu", dropout_rate=0.0,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, relative_attention_num_buckets=8,
                      relative_attention_max_distance=16)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config).eval()
    head = torch.nn.Linear(32, 97, bias=True)
    with torch.no_grad():  # confident enough to loop; EOS a little likelier, so that a ban ends a loop
        head.weight.copy_(model.lm_head.weight * 8.0)
        head.bias.zero_()
        head.bias[1] = 20.0 if gated else 30.0
    model.lm_head = head
    return model


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("preset", ["greedy", "guarded", "careful"])
def test_t5_is_token_identical_to_transformers(gated, preset):
    model = t5_model(gated)
    generator = torch.Generator().manual_seed(1)
    sources = [torch.randint(2, 97, (n,), generator=generator).tolist() + [1] for n in (5, 12, 3, 9, 17, 7, 2)]
    settings = {**NEUTRAL, **DECODING[preset]}
    expected = transformers_rows(model, sources, 0, [1], settings, 30, SEQ2SEQ)
    for batch in (7, 3):  # one batch as Transformers runs it; and sorted batches of three (greedy only)
        options = EXACT if batch == 7 else EngineOptions(check_every=4)
        if batch == 3 and settings["do_sample"]:
            continue
        got = engine_rows(model, sources, 0, [1], settings, 30, SEQ2SEQ, batch=batch, options=options)
        assert [ids for ids, _ in got] == expected
    assert len({len(row) for row in expected}) >= 2 and any(row[-1] == 1 for row in expected)  # EOS, varied steps


def test_t5_with_a_lora_adapter_is_token_identical_to_transformers():
    from test_fast_t5 import with_lora

    model = with_lora(t5_model(True)).eval()
    generator = torch.Generator().manual_seed(1)
    sources = [torch.randint(2, 97, (n,), generator=generator).tolist() + [1] for n in (5, 12, 3, 9, 17, 7, 2)]
    guarded = {**NEUTRAL, **DECODING["guarded"]}
    expected = transformers_rows(model, sources, 0, [1], guarded, 30, SEQ2SEQ)
    with model.disable_adapter():
        assert transformers_rows(model, sources, 0, [1], guarded, 30, SEQ2SEQ) != expected
    got = engine_rows(model, sources, 0, [1], guarded, 30, SEQ2SEQ, batch=3, options=EngineOptions(check_every=4))
    assert [ids for ids, _ in got] == expected


def test_generate_details_with_the_engine_on_t5(t5_tokenizer):
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=t5_tokenizer, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                num_heads=4, decoder_start_token_id=0, pad_token_id=0,
                                                eos_token_id=1)).eval()
    for preset in ("greedy", "guarded"):
        today = generate_details(model, tokenizer, PROMPTS, SEQ2SEQ, preset, 16, batch_size=4)
        assert generate_details(model, tokenizer, PROMPTS, SEQ2SEQ, preset, 16, batch_size=4,
                                engine="chef-genius") == today

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("preset", ["greedy", "guarded"])
def test_t5_cuda_graph_path_writes_transformers_greedy_recipes(gated, preset):
    """On a GPU: the T5 decoder's steps after the first captured as a CUDA graph and replayed (a
    static self-attention cache, cross-attention reused) give Transformers' greedy rows, in one
    batch and in sorted batches of three."""
    model = t5_model(gated).cuda()
    generator = torch.Generator().manual_seed(1)
    sources = [torch.randint(2, 97, (n,), generator=generator).tolist() + [1] for n in (5, 12, 3, 9, 17, 7, 2)]
    graph_rows_match_transformers(model, sources, preset, SEQ2SEQ, batches=(7, 3))
