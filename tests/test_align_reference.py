"""The Aligner against an independent plain-loop reference, for every preset."""

from __future__ import annotations

import math

import pytest
import torch

from rocket_vla.align import VARIANTS, AlignConfig, Aligner

DTYPE = torch.float64
P, B, T, DS, DT, H = 4, 3, 5, 12, 8, 16


def ref_widths(cfg: AlignConfig) -> list[int]:
    """Widths straight from the official formula (``AlignProjector`` in
    openvla-ROCKET/prismatic/models/projectors_rocket.py), not from the library."""
    n = cfg.num_pairs
    if not cfg.matryoshka:
        return [cfg.hidden_dim] * n
    ratios = [0.2 + 0.8 * i / max(n - 1, 1) for i in range(n)]
    return [max(1, int(cfg.hidden_dim * r)) for r in ratios]


def ref_project(proj, x: torch.Tensor, d: int, layernorm: bool) -> torch.Tensor:
    """One token through one projector, written out with vectors only."""
    if layernorm:
        mu = x.sum() / x.numel()
        var = ((x - mu) ** 2).sum() / x.numel()
        x = (x - mu) / torch.sqrt(var + proj.norm.eps) * proj.norm.weight + proj.norm.bias
    hidden = []
    for j in range(d):
        z = (proj.fc1.weight[j] * x).sum() + proj.fc1.bias[j]
        hidden.append(0.5 * z * (1 + torch.erf(z / math.sqrt(2.0))))
    h = torch.stack(hidden)
    return torch.stack(
        [(proj.fc2.weight[k, :d] * h).sum() + proj.fc2.bias[k] for k in range(proj.fc2.out_features)]
    )


def ref_loss(aligner: Aligner, student, teacher, mask) -> torch.Tensor:
    cfg = aligner.config
    widths = ref_widths(cfg)
    pair_losses = []
    for i in range(cfg.num_pairs):
        sample_losses = []
        for b in range(student[i].shape[0]):
            token_losses = []
            for t in range(student[i].shape[1]):
                if mask is not None and not bool(mask[b, t]):
                    continue
                preds = [
                    ref_project(aligner.projectors.projector(i, m), student[i][b, t], widths[i],
                                cfg.layernorm)
                    for m in range(cfg.ensemble)
                ]
                pred = sum(preds) / len(preds)
                tgt = teacher[i][b, t]
                cos = (pred * tgt).sum() / (pred.norm() * tgt.norm())
                token_losses.append(1 - cos)
            if token_losses:
                sample_losses.append(sum(token_losses) / len(token_losses))
        if sample_losses:
            pair_losses.append(sum(sample_losses) / len(sample_losses))
    if not pair_losses:
        return torch.zeros((), dtype=DTYPE)
    return sum(pair_losses) / len(pair_losses)


def build(variant: str, **overrides) -> Aligner:
    layers = {
        "spatial_forcing": ([3], [-1]),
    }.get(variant, ([1, 2, 3, 4], [2, 3, 5, 6]))
    cfg = AlignConfig.preset(
        variant, student_dim=DS, teacher_dim=DT, hidden_dim=H,
        student_layers=layers[0], teacher_layers=layers[1], **overrides,
    )
    torch.manual_seed(0)
    aligner = Aligner(cfg).to(DTYPE)
    # Non-trivial LayerNorm affine parameters so the reference really checks them.
    for p in aligner.parameters():
        with torch.no_grad():
            p.add_(0.05 * torch.randn_like(p))
    return aligner


def inputs(n_pairs: int, masked: bool):
    g = torch.Generator().manual_seed(1)
    student = [torch.randn(B, T, DS, generator=g, dtype=DTYPE, requires_grad=True)
               for _ in range(n_pairs)]
    teacher = [torch.randn(B, T, DT, generator=g, dtype=DTYPE) for _ in range(n_pairs)]
    mask = None
    if masked:
        mask = torch.rand(B, T, generator=g) > 0.4
        mask[0] = False  # an all-masked sample must contribute nothing
        mask[1, 0] = True
    return student, teacher, mask


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "baseline"])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_plain_loop_in_value_and_gradient(variant: str, masked: bool) -> None:
    aligner = build(variant)
    student, teacher, mask = inputs(aligner.config.num_pairs, masked)
    out = aligner(student, teacher, mask)
    ref = ref_loss(aligner, student, teacher, mask)
    torch.testing.assert_close(out.loss, ref, rtol=1e-10, atol=1e-12)

    params = [p for p in aligner.parameters()]
    got = torch.autograd.grad(out.loss, student + params, allow_unused=True)
    want = torch.autograd.grad(ref, student + params, allow_unused=True)
    for g_got, g_want in zip(got, want, strict=True):
        if g_want is None:
            assert g_got is None or torch.count_nonzero(g_got) == 0
        else:
            torch.testing.assert_close(g_got, g_want, rtol=1e-9, atol=1e-12)


def test_ensemble_matches_plain_loop() -> None:
    aligner = build("rocket", ensemble=2)
    student, teacher, mask = inputs(aligner.config.num_pairs, True)
    out = aligner(student, teacher, mask)
    torch.testing.assert_close(out.loss, ref_loss(aligner, student, teacher, mask))


def test_per_pair_losses_are_detached_and_match_reference() -> None:
    aligner = build("naive")
    student, teacher, _ = inputs(aligner.config.num_pairs, False)
    out = aligner(student, teacher)
    assert not out.per_pair.requires_grad
    assert out.per_pair.shape == (aligner.config.num_pairs,)
    torch.testing.assert_close(out.per_pair.mean(), out.loss.detach())
    torch.testing.assert_close(out.weighted, aligner.config.weight * out.loss)


def test_baseline_builds_nothing_and_costs_nothing() -> None:
    aligner = Aligner(AlignConfig.preset("baseline"))
    assert not aligner.enabled
    assert list(aligner.parameters()) == []
    out = aligner([], [])
    assert out.loss.item() == 0.0 and out.per_pair.numel() == 0


def test_all_masked_batch_gives_zero_loss_and_finite_gradient() -> None:
    aligner = build("rocket")
    student, teacher, _ = inputs(aligner.config.num_pairs, False)
    mask = torch.zeros(B, T, dtype=torch.bool)
    out = aligner(student, teacher, mask)
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert all(torch.isfinite(s.grad).all() for s in student)


def test_per_pair_mask_excludes_a_whole_pair() -> None:
    aligner = build("shared")
    student, teacher, _ = inputs(aligner.config.num_pairs, False)
    mask = torch.ones(aligner.config.num_pairs, B, T, dtype=torch.bool)
    mask[2] = False
    out = aligner(student, teacher, mask)
    kept = [0, 1, 3]
    unmasked = aligner(student, teacher)
    assert out.per_pair[2].item() == 0.0
    torch.testing.assert_close(out.per_pair[kept], unmasked.per_pair[kept])
    torch.testing.assert_close(out.loss.detach(), out.per_pair[kept].mean())
