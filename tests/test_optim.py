"""The optimiser and schedule both training loops share (rocket_vla.optim)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rocket_vla.optim import build_optimizer, build_scheduler, lr_lambda


def test_step_decay_and_cosine() -> None:
    step = lr_lambda(schedule="step", decay_after=10, steps=20, warmup=0)
    assert [step(s) for s in (0, 9, 10, 19)] == [1.0, 1.0, 0.1, 0.1]
    cos = lr_lambda(schedule="cosine", steps=20, warmup=4)
    assert cos(0) == pytest.approx(0.25) and cos(3) == pytest.approx(1.0)
    assert cos(4) == pytest.approx(1.0) and cos(20) == pytest.approx(0.0)
    assert cos(12) == pytest.approx(0.5)
    const = lr_lambda(schedule="constant", steps=20, warmup=2)
    assert [const(s) for s in (0, 1, 2, 19)] == [0.5, 1.0, 1.0, 1.0]


def test_scheduler_sets_the_lr_of_each_step() -> None:
    """After k optimizer steps the group's lr is base * multiplier(k), as a plain loop computes it."""
    weight = nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.SGD([weight], lr=0.1)
    sched = build_scheduler(opt, warmup=2, steps=6, schedule="cosine")
    want = [0.1 * 0.5, 0.1 * 1.0] + [0.1 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 4)) for s in range(2, 6)]
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx(want)


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.pos_embed = nn.Parameter(torch.zeros(5, 4))
        self.camera_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.frozen = nn.Parameter(torch.zeros(4, 4), requires_grad=False)


def _names(model: nn.Module, params: list[torch.Tensor]) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_weight_decay_groups() -> None:
    model = _Toy()
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.05, betas=(0.8, 0.9))
    decay, free = opt.param_groups
    assert (decay["weight_decay"], free["weight_decay"], decay["betas"]) == (0.05, 0.0, (0.8, 0.9))
    # every trainable tensor of >= 2 dims is decayed (position table and tokens included)
    assert _names(model, decay["params"]) == {"linear.weight", "pos_embed", "camera_token"}
    assert _names(model, free["params"]) == {"linear.bias", "norm.weight", "norm.bias"}
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.05, no_decay=("token", "pos_embed"))
    assert _names(model, opt.param_groups[0]["params"]) == {"linear.weight"}
    assert _names(model, opt.param_groups[1]["params"]) == {
        "linear.bias", "norm.weight", "norm.bias", "pos_embed", "camera_token"}


def test_cosine_floor_matches_openpis_schedule_after_warmup() -> None:
    """openpi's pi0 LIBERO recipe (optax warmup_cosine_decay_schedule: peak 2.5e-5, warm-up 1000,
    30k decay steps, end 2.5e-6), written out by hand: end + (peak - end) (1 + cos(pi t / T)) / 2."""
    peak, end, warmup, steps = 2.5e-5, 2.5e-6, 1000, 30_000
    fn = lr_lambda(schedule="cosine", steps=steps, warmup=warmup, floor=end / peak)
    for s in (1000, 5000, 15_500, 29_999, 30_000, 40_000):
        t = min(s - warmup, steps - warmup)
        want = end + (peak - end) * 0.5 * (1 + math.cos(math.pi * t / (steps - warmup)))
        assert peak * fn(s) == pytest.approx(want, rel=1e-12)
    values = [fn(s) for s in range(warmup, steps + 1, 97)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False)) and min(values) >= 0.1 - 1e-12
