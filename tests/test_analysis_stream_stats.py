"""Layer importance and projector similarity equal plain loops; padding is excluded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rocket_vla.align import AlignConfig, Aligner
from rocket_vla.analysis.importance import LayerImportance
from rocket_vla.analysis.projector_sim import ProjectorSimilarity
from rocket_vla.errors import RocketError


def _loop_cos(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    total, count = 0.0, 0
    for i in range(a.shape[0]):
        for t in range(a.shape[1]):
            if mask[i, t]:
                total += float(F.cosine_similarity(a[i, t], b[i, t], dim=0))
                count += 1
    return total, count


def test_importance_equals_a_plain_loop_and_skips_padding() -> None:
    g = torch.Generator().manual_seed(0)
    depth, windows = 5, (1, 2, 4)
    batches = []
    for _ in range(2):
        states = [torch.randn(3, 7, 6, generator=g, dtype=torch.float64)]
        for _ in range(depth):
            states.append(states[-1] + 0.5 * torch.randn(3, 7, 6, generator=g, dtype=torch.float64))
        mask = torch.rand(3, 7, generator=g) > 0.3
        for s in states:
            s[~mask] = 1e3 * torch.randn(int((~mask).sum()), 6, generator=g, dtype=torch.float64)
        batches.append((states, mask))
    acc = LayerImportance(depth, windows)
    for states, mask in batches:
        acc.update(states, mask)
    out = acc.compute()
    for s in range(depth):
        for wi, w in enumerate(windows):
            if s + w > depth:
                assert out["matrix"][s][wi] is None
                continue
            sums = [_loop_cos(st[s], st[s + w], m) for st, m in batches]
            want = sum(t for t, _ in sums) / sum(c for _, c in sums)
            assert out["matrix"][s][wi] == pytest.approx(want, abs=1e-10)


def test_importance_bad_input_is_a_clear_error() -> None:
    with pytest.raises(RocketError, match="windows"):
        LayerImportance(4, (5,))
    acc = LayerImportance(3, (1,))
    with pytest.raises(RocketError, match="expected 4 hidden states"):
        acc.update([torch.zeros(1, 2, 3)] * 3)
    with pytest.raises(RocketError, match="no valid token"):
        acc.compute()


def _aligner(projector: str, pairs: int = 3, dim: int = 8, tdim: int = 5) -> Aligner:
    torch.manual_seed(0)
    variant = {"shared": "shared", "independent": "naive"}[projector]
    return Aligner(AlignConfig.preset(variant, student_dim=dim, teacher_dim=tdim,
                                      student_layers=list(range(1, pairs + 1)),
                                      teacher_layers=list(range(1, pairs + 1)), hidden_dim=16))


def test_projector_similarity_equals_a_plain_loop() -> None:
    aligner = _aligner("independent")
    g = torch.Generator().manual_seed(1)
    student = [torch.randn(2, 6, 8, generator=g) for _ in range(3)]
    teacher = [torch.randn(2, 6, 5, generator=g) for _ in range(3)]
    mask = torch.rand(2, 6, generator=g) > 0.3
    acc = ProjectorSimilarity(3)
    acc.update(aligner, student, teacher, mask)
    out = acc.compute()
    with torch.no_grad():
        projected = [aligner.projectors(s, i) for i, s in enumerate(student)]
    count = int(mask.sum())
    for i in range(3):
        assert out["fit"][i] == pytest.approx(_loop_cos(projected[i], teacher[i], mask)[0] / count,
                                              abs=1e-6)
        for j in range(3):
            for key, values in (("inputs", student), ("outputs", projected), ("teacher", teacher)):
                want = _loop_cos(values[i], values[j], mask)[0] / count
                assert out[key][i][j] == pytest.approx(want, abs=1e-6)


def test_fit_is_one_minus_the_pair_loss_and_shared_maps_agree() -> None:
    aligner = _aligner("shared")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 5, 8, generator=g)
    teacher = [torch.randn(4, 5, 5, generator=g) for _ in range(3)]
    acc = ProjectorSimilarity(3)
    acc.update(aligner, [x, x, x], teacher)
    out = acc.compute()
    per_pair = aligner([x, x, x], teacher).per_pair
    assert out["fit"] == pytest.approx((1 - per_pair).tolist(), abs=1e-6)
    # one shared map applied to the same input gives the same output for every pair
    assert out["outputs"][0][2] == pytest.approx(1.0, abs=1e-6)


def test_projector_profile_needs_a_projector() -> None:
    baseline = Aligner(AlignConfig.preset("baseline", student_dim=8, student_depth=2))
    with pytest.raises(RocketError, match="no projector"):
        ProjectorSimilarity(1).update(baseline, [torch.zeros(1, 2, 8)], [torch.zeros(1, 2, 5)])
