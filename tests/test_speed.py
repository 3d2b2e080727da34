"""The speed levers change how the model computes, not what: outputs, gradients and greedy
generations equal the unpatched model's (fp32 on CPU, where both paths round alike)."""

from __future__ import annotations

import copy

import pytest
import torch

from chef_genius.model import speed


def tiny_t5(seed: int = 0, dropout: float = 0.0):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=97, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_decoder_layers=3, num_heads=4,
                      feed_forward_proj="gated-gelu", dropout_rate=dropout, decoder_start_token_id=0, pad_token_id=0,
                      eos_token_id=1, relative_attention_num_buckets=8, relative_attention_max_distance=16)
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config).eval()


def batch():
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(2, 97, (3, 13), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, 9:] = 0  # padded rows: the mask must reach every layer
    attention_mask[2, 4:] = 0
    labels = torch.randint(2, 97, (3, 11), generator=generator)
    labels[1, 7:] = -100
    return input_ids, attention_mask, labels


def forward_and_grads(model):
    input_ids, attention_mask, labels = batch()
    model.zero_grad(set_to_none=True)
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), grads


@pytest.mark.parametrize("lever", ["fuse_norms", "shared_bias_attention", "both"])
def test_levers_keep_logits_and_gradients(lever):
    reference = tiny_t5()
    patched = copy.deepcopy(reference)
    counts = {}
    if lever in ("fuse_norms", "both"):
        counts["norms"] = speed.fuse_norms(patched)
    if lever in ("shared_bias_attention", "both"):
        counts["attention"] = speed.shared_bias_attention(patched)
    # 3 + 3 blocks: encoder 2 norms each + final, decoder 3 each + final; 3 + 6 attention modules.
    assert counts.get("norms", 17) == 3 * 2 + 1 + 3 * 3 + 1
    assert counts.get("attention", 9) == 3 + 3 * 2
    want_logits, want_grads = forward_and_grads(reference)
    got_logits, got_grads = forward_and_grads(patched)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-5, atol=1e-5)
    assert got_grads.keys() == want_grads.keys()
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_padding_reaches_the_shared_mask():
    """A padded position must not change the other positions' outputs."""
    model = tiny_t5()
    speed.shared_bias_attention(model)
    input_ids, attention_mask, labels = batch()
    decoder_input_ids = model._shift_right(labels.clamp_min(0))
    first = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
    changed = input_ids.clone()
    changed[0, 10] = 5  # a padded position of row 0
    second = model(input_ids=changed, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
    torch.testing.assert_close(first, second)
    # and the decoder stays causal: a later decoder token does not change earlier logits
    later = decoder_input_ids.clone()
    later[:, -1] = 7
    third = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=later).logits
    torch.testing.assert_close(third[:, :-1], first[:, :-1])
    assert not torch.allclose(third[:, -1], first[:, -1])


def test_generation_unchanged():
    reference = tiny_t5(seed=3)
    patched = copy.deepcopy(reference)
    speed.fuse_norms(patched)
    speed.shared_bias_attention(patched)
    input_ids, attention_mask, _ = batch()
    kwargs = {"max_new_tokens": 12, "do_sample": False, "num_beams": 1}
    want = reference.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    got = patched.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    assert torch.equal(got, want)


def test_lora_inputs_stay_in_compute_dtype():
    from peft import LoraConfig, TaskType, get_peft_model

    model = get_peft_model(tiny_t5(), LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=2, lora_alpha=4,
                                                 target_modules=["q", "v"]))
    assert speed.lora_inputs_in_compute_dtype(model) == 9 * 2
    model.to(torch.bfloat16)
    for module in model.modules():
        if hasattr(module, "lora_A"):
            module.lora_A["default"].float()  # adapter weights fp32, as PEFT keeps them
            module.lora_B["default"].float()
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
             for n, m in model.named_modules() if n.endswith("lora_A.default")]
    input_ids, attention_mask, labels = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    for hook in hooks:
        hook.remove()
    assert seen and set(seen) == {torch.bfloat16}


def test_non_t5_models_are_left_alone():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32))
    assert speed.fuse_norms(model) == 0
    assert speed.shared_bias_attention(model) == 0


def test_cuda_graph_policy_names_each_reason():
    from chef_genius.model.graphs import graphs_unsupported_reason

    gpu = torch.device("cuda", 0)  # a device object only: nothing runs on it
    assert graphs_unsupported_reason(1, gpu, False, False) is None  # fixed batch sizes: graphs on
    assert "token budget" in graphs_unsupported_reason(1, gpu, False, False, token_budget=True)
    assert graphs_unsupported_reason(1, torch.device("cpu"), False, False) == "not on a GPU"
    assert "several processes" in graphs_unsupported_reason(2, gpu, False, False)
    assert "checkpointing" in graphs_unsupported_reason(1, gpu, True, False)
    assert "compiled blocks" in graphs_unsupported_reason(1, gpu, False, True)
