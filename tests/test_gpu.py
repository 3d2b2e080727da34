"""What only a GPU exercises: the compiled layers of the fast T5 forward, the CUDA-graph step and
the trainer with both on. Skipped without CUDA (CI has none); run on the device machine:

    CHEF_GENIUS_SHARED_DATA=$PWD/.devdata python3 -m pytest tests/test_gpu.py -m gpu
"""

from __future__ import annotations

import pytest
import torch
from test_fast_t5 import _trainer, batch, t5, with_lora
from test_training import small_data  # noqa: F401  (a fixture)

from chef_genius.families import CAUSAL, SEQ2SEQ
from chef_genius.model import fast_t5
from chef_genius.training.trainer import optimizer_step

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _on_cuda(b: dict) -> dict:
    return {name: t.cuda() for name, t in b.items()}


def _loss_and_grads(model, forward, b):
    model.zero_grad(set_to_none=True)
    smoothed, nll, count = SEQ2SEQ.loss_sums(forward, b, 0.1, 0, 0)
    (smoothed / count).backward()
    return smoothed.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [False, True])
def test_compiled_layers_compute_transformers_loss_and_gradients(lora):
    model = t5(gated=True)
    model = (with_lora(model) if lora else model).cuda().train()
    b = _on_cuda(batch())
    expected, grads_hf = _loss_and_grads(model, model, b)
    compiled = fast_t5.FastT5(model, compile_layers=True)
    for _ in range(2):  # the second call reuses the compiled graphs
        got, grads = _loss_and_grads(model, compiled, b)
        # fp32, but Inductor fuses and reorders reductions: a few ulps, not bit equality.
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        assert grads.keys() == grads_hf.keys() and grads
        for name, grad in grads.items():
            torch.testing.assert_close(grad, grads_hf[name], rtol=1e-3, atol=1e-5, msg=name)


def test_compiled_layers_in_bf16_stay_near_fp32():
    model = with_lora(t5(gated=True)).cuda().train()
    b = _on_cuda(batch())
    reference, _ = _loss_and_grads(model, model, b)
    compiled = fast_t5.FastT5(model, compile_layers=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got, _ = _loss_and_grads(model, compiled, b)
    assert got.item() == pytest.approx(reference.item(), rel=2e-2)


def test_graph_replay_gives_the_eager_losses_and_weights(tmp_path, small_data):  # noqa: F811
    """The trainer on CUDA, compiled layers + CUDA graphs against plain eager: the same losses over
    4 steps (the 4th replays the 1st one's graph with new inputs) and the same adapter, up to
    rounding: Inductor reorders fp32 reductions, and Adam turns a few-ulp gradient difference on a
    near-zero gradient into a visible step, so weights are compared against how far they moved."""
    from chef_genius.dataset.collate import Collator

    runs = {}
    for graphs in (True, False):
        run, state = _trainer(tmp_path / str(graphs), small_data, True, **{
            "model.cuda_graphs": graphs, "model.compile_blocks": graphs, "model.dtype": "fp32"})
        assert (run.graphed is not None) is graphs
        trainable = dict((n, p) for n, p in run.model.saved.named_parameters() if p.requires_grad)
        start = {n: p.detach().clone() for n, p in trainable.items()}
        collate = Collator(run.plan.epoch_data(0).examples, run.pad_id, SEQ2SEQ)
        losses = [optimizer_step(run, state, [collate(list(range(i, i + 4)))])["train/loss"] for i in (0, 4, 8, 0)]
        runs[graphs] = losses, {n: p.detach().clone() for n, p in trainable.items()}, start
        if graphs:
            assert len(run.graphed.graphs) <= 3 and not run.graphed.failed  # 4 steps: a replay
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-4)
    assert runs[True][2].keys() == runs[False][2].keys()
    for name, start in runs[False][2].items():
        torch.testing.assert_close(runs[True][2][name], start)  # the same starting adapter
    ratios = {}
    for name, eager in runs[False][1].items():
        moved = (eager - runs[False][2][name]).abs().max().item()
        ratios[name] = (runs[True][1][name] - eager).abs().max().item() / max(moved, 1e-8)
    worst = max(ratios, key=ratios.get)
    assert ratios[worst] < 0.02, f"{worst}: graphed and eager weights differ by {ratios[worst]:.3%} of the update"


def test_gradient_noise_is_drawn_on_the_device_and_resumes_exactly():
    from chef_genius.noise import add_gradient_noise

    def noisy(generator):
        param = torch.nn.Parameter(torch.zeros(1000, 100, device="cuda"))
        param.grad = torch.ones_like(param)
        add_gradient_noise([param], 3, 1e-2, 0.55, generator)
        return param.grad.clone()

    generator = torch.Generator(device="cuda").manual_seed(7)
    state = generator.get_state()
    first = noisy(generator)
    assert first.device.type == "cuda" and (first - 1).std().item() == pytest.approx(0.1 / 4 ** 0.275, rel=0.05)
    generator.set_state(state)  # what a resumed run restores from its checkpoint
    assert torch.equal(noisy(generator), first)


def test_generation_with_compiled_blocks_runs_eagerly_and_matches():
    import torch._dynamo
    from transformers import LlamaConfig, LlamaForCausalLM

    from chef_genius.inference import generate_details
    from chef_genius.model.loading import compile_blocks
    from tests.harness.tiny_causal import chat_tokenizer

    tokenizer = chat_tokenizer(["Title: Soup || Ingredients: water || Steps: Boil."] * 20)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4)).cuda().eval()
    eager = generate_details(model, tokenizer, ["soup", "a dish with rice"], CAUSAL, "greedy", 24)
    compile_blocks(model)
    torch._dynamo.utils.counters.clear()
    compiled = generate_details(model, tokenizer, ["soup", "a dish with rice"], CAUSAL, "greedy", 24)
    assert [g[0].text for g in compiled] == [g[0].text for g in eager]
    assert sum(torch._dynamo.utils.counters["stats"].values()) == 0  # nothing compiled during generation
