"""Pure cores of training: schedule values, label smoothing against torch, gradient noise."""

from __future__ import annotations

import math

import pytest
import torch

from chef_genius.losses import smoothed_cross_entropy_sums
from chef_genius.noise import add_gradient_noise, noise_std
from chef_genius.schedule import Schedule, cycle_position, ends_high, lr_at

PEAK, MIN = 1e-3, 1e-6


def seed_schedule(total=5000, cosine=True) -> Schedule:
    return Schedule.build(PEAK, total, warmup_steps=1000, warmup_max_fraction=0.1, first_cycle=1000,
                          cycle_mult=2, minimum=MIN, cosine=cosine)


def test_warmup_is_capped_at_ten_percent_and_linear():
    s = seed_schedule()
    assert s.warmup == 500
    assert lr_at(0, s) == 0.0
    assert lr_at(250, s) == pytest.approx(PEAK / 2)
    assert lr_at(499, s) == pytest.approx(PEAK * 499 / 500)


@pytest.mark.parametrize("step, expected", [
    (500, PEAK),                            # cycle 0 starts at the peak
    (1000, MIN + (PEAK - MIN) / 2),         # middle of the 1000-step cycle
    (1499, MIN + (PEAK - MIN) * (1 + math.cos(math.pi * 999 / 1000)) / 2),
    (1500, PEAK),                           # warm restart
    (2500, MIN + (PEAK - MIN) / 2),         # middle of the 2000-step cycle (T_mult = 2)
    (3500, PEAK),                           # second restart
    (4500, MIN + (PEAK - MIN) * (1 + math.cos(math.pi * 1000 / 4000)) / 2),
])
def test_cosine_with_warm_restarts(step, expected):
    assert lr_at(step, seed_schedule()) == pytest.approx(expected, rel=1e-12)


def test_cycle_position():
    assert cycle_position(0, 1000, 2) == (0, 0, 1000)
    assert cycle_position(999, 1000, 2) == (0, 999, 1000)
    assert cycle_position(1000, 1000, 2) == (1, 0, 2000)
    assert cycle_position(3000, 1000, 2) == (2, 0, 4000)


def test_linear_schedule_when_cosine_disabled():
    s = seed_schedule(cosine=False)
    assert lr_at(500, s) == pytest.approx(PEAK)
    assert lr_at(2750, s) == pytest.approx(PEAK / 2)
    assert lr_at(5000, s) == 0.0


def test_warns_when_training_ends_high_in_a_cycle():
    assert ends_high(seed_schedule(5000))            # ends 1,499 steps into a 4,000-step cycle
    assert not ends_high(seed_schedule(3333))  # warmup 333, last tau 2999: the bottom of the second cycle
    assert ends_high(seed_schedule(3334))  # last tau 3000: the top of the third cycle
    assert not ends_high(seed_schedule(cosine=False))


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("chunk_rows", [3, 4096])
def test_label_smoothing_equals_torch_reference(eps, chunk_rows):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 9, 37, generator=generator, requires_grad=True)
    labels = torch.randint(0, 37, (4, 9), generator=generator)
    labels[0, 5:] = -100
    labels[3, :2] = -100
    reference = torch.nn.functional.cross_entropy(logits.reshape(-1, 37), labels.reshape(-1),
                                                  label_smoothing=eps, ignore_index=-100)
    reference.backward()
    expected_grad = logits.grad.clone()
    logits.grad = None
    smoothed, nll, count = smoothed_cross_entropy_sums(logits, labels, eps, chunk_rows=chunk_rows)
    (smoothed / count).backward()
    assert count == int((labels != -100).sum())
    torch.testing.assert_close(smoothed / count, reference.detach())
    torch.testing.assert_close(logits.grad, expected_grad)
    plain = torch.nn.functional.cross_entropy(logits.reshape(-1, 37), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(nll / count, plain.detach())


def test_label_smoothing_in_bf16_stays_close():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 500, generator=generator)
    labels = torch.randint(0, 500, (64,), generator=generator)
    reference = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    smoothed, _, count = smoothed_cross_entropy_sums(logits.bfloat16(), labels, 0.1)
    assert float(smoothed / count) == pytest.approx(float(reference), rel=2e-2)


def test_noise_std_schedule():
    assert noise_std(0, 0.3, 0.55) == pytest.approx(math.sqrt(0.3))
    assert noise_std(1000, 0.3, 0.55) == pytest.approx(math.sqrt(0.3 / 1001 ** 0.55))


def test_noise_goes_only_to_parameters_with_gradients_and_reports_ratio():
    a = torch.nn.Parameter(torch.zeros(1000))
    b = torch.nn.Parameter(torch.zeros(10))
    a.grad = torch.ones(1000)
    generator = torch.Generator().manual_seed(0)
    ratio = add_gradient_noise([a, b], step=0, eta=0.01, gamma=0.55, generator=generator)
    noise = a.grad - 1
    assert b.grad is None
    assert float(noise.std()) == pytest.approx(0.1, rel=0.1)  # sqrt(0.01)
    assert ratio == pytest.approx(float(noise.norm()) / math.sqrt(1000), rel=1e-5)
