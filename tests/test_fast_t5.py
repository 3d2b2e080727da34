"""The lean T5 training forward computes Transformers' function: same logits, same loss, same
gradients, for every T5 variant we train (gated-gelu FLAN-T5, ReLU T5 v1.0, tied and untied
heads, with and without LoRA, with activation checkpointing), and it reaches training."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from test_training import built, small_config, small_data  # noqa: F401  (small_data is a fixture)

from chef_genius.families import SEQ2SEQ
from chef_genius.model import fast_t5
from chef_genius.training.trainer import optimizer_step


def t5(seed: int = 0, dropout: float = 0.0, gated: bool = True, tied: bool = False):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=97, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_decoder_layers=2, num_heads=4,
                      feed_forward_proj="gated-gelu" if gated else "relu", dropout_rate=dropout,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, relative_attention_num_buckets=8,
                      relative_attention_max_distance=16, tie_word_embeddings=tied)
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config)


def with_lora(model, dropout: float = 0.0):
    from peft import LoraConfig, TaskType, get_peft_model

    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=4, lora_alpha=8,
                                             lora_dropout=dropout, target_modules=["q", "v"]))
    with torch.no_grad():  # PEFT starts B at zero: give the branch something to compute
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return model


def batch():
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(2, 97, (3, 13), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, 9:] = 0  # padded prompts: the mask must reach every encoder layer and cross-attention
    attention_mask[2, 4:] = 0
    labels = torch.randint(2, 97, (3, 11), generator=generator)
    labels[1, 7:] = -100  # a right-padded target
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def loss_and_grads(model, forward):
    model.zero_grad(set_to_none=True)
    smoothed, nll, count = SEQ2SEQ.loss_sums(forward, batch(), 0.1, 0, 0)
    (smoothed / count).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return smoothed.detach(), nll.detach(), grads


@pytest.mark.parametrize("gated,tied,lora", [(True, False, False), (True, False, True), (False, True, False),
                                             (False, True, True)])
def test_same_loss_logits_and_gradients_as_transformers(gated, tied, lora):
    torch.manual_seed(0)
    model = t5(gated=gated, tied=tied)
    model = with_lora(model) if lora else model
    model.train()  # dropout 0: training mode with nothing random
    fast = fast_t5.FastT5(model)
    b = batch()
    decoder_inputs = torch.zeros_like(b["labels"])
    decoder_inputs[:, 1:] = b["labels"][:, :-1].clamp_min(0)
    expected = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                     decoder_input_ids=decoder_inputs).logits
    got = fast(b["input_ids"], b["attention_mask"], decoder_inputs).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    smoothed_hf, nll_hf, grads_hf = loss_and_grads(model, model)
    smoothed, nll, grads = loss_and_grads(model, fast)
    torch.testing.assert_close(smoothed, smoothed_hf, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(nll, nll_hf, rtol=1e-6, atol=1e-5)
    assert grads.keys() == grads_hf.keys() and len(grads) > 0
    if lora:
        assert all("lora_" in name for name in grads)
    else:  # every weight trains, the position-bias tables included
        assert any("relative_attention_bias" in name for name in grads)
    for name in grads:
        torch.testing.assert_close(grads[name], grads_hf[name], rtol=1e-4, atol=5e-5, msg=name)


def test_activation_checkpointing_gives_the_same_gradients():
    model = with_lora(t5())
    model.train()
    _, _, plain = loss_and_grads(model, fast_t5.FastT5(model))
    model.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    _, _, recomputed = loss_and_grads(model, fast_t5.FastT5(model))
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=1e-5, atol=1e-6)


def test_dropout_is_active_in_training_and_off_in_eval():
    model = with_lora(t5(dropout=0.3), dropout=0.2)
    fast = fast_t5.FastT5(model)
    b = batch()
    decoder_inputs = torch.zeros_like(b["labels"])
    fast.train()
    torch.manual_seed(0)
    first = fast(b["input_ids"], b["attention_mask"], decoder_inputs).logits
    second = fast(b["input_ids"], b["attention_mask"], decoder_inputs).logits
    assert not torch.allclose(first, second)
    fast.eval()
    expected = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                     decoder_input_ids=decoder_inputs).logits
    torch.testing.assert_close(fast(b["input_ids"], b["attention_mask"], decoder_inputs).logits, expected,
                               rtol=1e-5, atol=1e-5)


def test_padding_is_invisible():
    """A prompt's logits do not change when more pad columns are appended."""
    model = t5().eval()
    fast = fast_t5.FastT5(model)
    b = batch()
    decoder_inputs = torch.zeros_like(b["labels"])
    wider = torch.nn.functional.pad(b["input_ids"], (0, 5), value=0)
    wider_mask = torch.nn.functional.pad(b["attention_mask"], (0, 5), value=0)
    torch.testing.assert_close(fast(wider, wider_mask, decoder_inputs).logits,
                               fast(b["input_ids"], b["attention_mask"], decoder_inputs).logits,
                               rtol=1e-5, atol=1e-5)


def test_unsupported_models_are_named():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    assert fast_t5.unsupported_reason(gpt) == "not a T5-family encoder-decoder"
    with pytest.raises(ValueError, match="not a T5-family"):
        fast_t5.FastT5(gpt)
    half = copy.deepcopy(t5()).half()
    assert "fp16" in fast_t5.unsupported_reason(half)
    assert fast_t5.unsupported_reason(with_lora(t5())) is None


def _trainer(tmp_path, small_data, fast: bool, **overrides):  # noqa: F811
    """(run, state) with nothing random in the model: both paths must give the same numbers."""
    run, state = built(small_config(tmp_path / f"run-{fast}", small_data, **{
        "gradient_noise.enabled": False, "lora.dropout": 0.0, "model.fast_forward": fast, **overrides}))
    base = run.model.saved.get_base_model()
    base.config.dropout_rate = 0.0
    for module in run.model.saved.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        elif isinstance(getattr(module, "dropout", None), float):  # T5Attention's attention-prob dropout
            module.dropout = 0.0
    return run, state


def test_the_trainer_trains_through_it_with_the_same_losses_and_weights(tmp_path, small_data):  # noqa: F811
    from chef_genius.dataset.collate import Collator

    runs = {}
    for fast in (True, False):
        run, state = _trainer(tmp_path, small_data, fast)
        assert isinstance(run.model.forward, fast_t5.FastT5) is fast
        # Training mode from set-up on (Transformers loads models in eval mode, which once turned
        # dropout off in benchmarks that call optimizer_step directly).
        assert run.model.forward.training and run.model.saved.get_base_model().training
        collate = Collator(run.plan.epoch_data(0).examples, run.pad_id, SEQ2SEQ)
        losses = [optimizer_step(run, state, [collate(list(range(i, i + 4)))])["train/loss"] for i in (0, 4, 8)]
        weights = {n: p.detach().clone() for n, p in run.model.saved.named_parameters() if p.requires_grad}
        runs[fast] = losses, weights
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-5)
    for name, value in runs[True][1].items():
        torch.testing.assert_close(value, runs[False][1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_allocator_setting_keeps_the_users_choice(monkeypatch):
    from chef_genius.cli.environment import configure_allocator

    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    configure_allocator()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    configure_allocator()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"
