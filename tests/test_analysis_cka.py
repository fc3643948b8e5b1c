"""Linear CKA: identities, invariances, the streaming estimator, estimator bias, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rocket_vla.analysis.cka import (
    CKAResult,
    StreamingCKA,
    batch_sizes,
    hsic_matrix,
    linear_cka,
    sample_gram,
)
from rocket_vla.errors import RocketError

ESTIMATORS = ("debiased", "biased")


def _direct_cka(x: torch.Tensor, y: torch.Tensor, estimator: str) -> float:
    """Textbook formulas on explicit matrices, independent of the module's vectorisation."""
    n = x.shape[0]
    k, l = x @ x.T, y @ y.T
    if estimator == "biased":
        h = torch.eye(n, dtype=x.dtype) - 1.0 / n

        def hsic(a, b):
            return torch.trace(a @ h @ b @ h) / (n - 1) ** 2
    else:
        def hsic(a, b):
            a = a - torch.diag(torch.diag(a))
            b = b - torch.diag(torch.diag(b))
            one = torch.ones(n, 1, dtype=x.dtype)
            val = (torch.trace(a @ b) + (one.T @ a @ one) * (one.T @ b @ one) / ((n - 1) * (n - 2))
                   - 2.0 / (n - 2) * (one.T @ a @ b @ one))
            return val.squeeze() / (n * (n - 3))
    return float(hsic(k, l) / torch.sqrt(hsic(k, k) * hsic(l, l)))


def _features(seed: int, n: int = 24, d: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, d + 3, generator=g, dtype=torch.float64) \
        + 0.5 * torch.randn(n, d + 3, generator=g, dtype=torch.float64)
    return x, y


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_cka_of_a_representation_with_itself_is_one(estimator: str) -> None:
    x, _ = _features(0)
    assert linear_cka(x, x, estimator) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_module_matches_textbook_formula(estimator: str) -> None:
    x, y = _features(1)
    assert linear_cka(x, y, estimator) == pytest.approx(_direct_cka(x, y, estimator), abs=1e-10)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-3, 1e3),
       estimator=st.sampled_from(ESTIMATORS))
def test_invariant_to_orthogonal_maps_and_isotropic_scaling(
    seed: int, scale: float, estimator: str
) -> None:
    x, y = _features(seed)
    g = torch.Generator().manual_seed(seed + 1)
    q_x, _ = torch.linalg.qr(torch.randn(x.shape[1], x.shape[1], generator=g, dtype=torch.float64))
    q_y, _ = torch.linalg.qr(torch.randn(y.shape[1], y.shape[1], generator=g, dtype=torch.float64))
    base = linear_cka(x, y, estimator)
    assert linear_cka(x @ q_x, y, estimator) == pytest.approx(base, abs=1e-9)
    assert linear_cka(x, scale * y @ q_y, estimator) == pytest.approx(base, abs=1e-9)


def test_streaming_equals_direct_formula() -> None:
    """One batch: the accumulator equals the direct CKA of the flattened token maps; several
    batches: the mean-HSIC ratio computed by hand."""
    g = torch.Generator().manual_seed(3)
    student = [torch.randn(40, 6, 8, generator=g, dtype=torch.float64) for _ in range(3)]
    teacher = [student[1] @ torch.randn(8, 5, generator=g, dtype=torch.float64)
               + torch.randn(40, 6, 5, generator=g, dtype=torch.float64),
               torch.randn(40, 6, 5, generator=g, dtype=torch.float64)]
    single = StreamingCKA([1, 2, 3], [4, 5])
    single.update(student, teacher)
    result = single.compute()
    for est in ESTIMATORS:
        for i, s in enumerate(student):
            for j, t in enumerate(teacher):
                want = _direct_cka(s.reshape(40, -1), t.reshape(40, -1), est)
                assert float(result.matrix(est)[i, j]) == pytest.approx(want, abs=1e-10)

    streamed = StreamingCKA([1, 2, 3], [4, 5])
    for chunk in range(4):
        sl = slice(10 * chunk, 10 * chunk + 10)
        streamed.update([s[sl] for s in student], [t[sl] for t in teacher])
    result = streamed.compute()
    assert result.num_samples == 40 and result.num_batches == 4

    def mean_hsic(a: torch.Tensor, b: torch.Tensor, est: str) -> float:
        return sum(
            float(hsic_matrix(sample_gram(a[10 * c:10 * c + 10])[None],
                              sample_gram(b[10 * c:10 * c + 10])[None], est)[0, 0])
            for c in range(4)) / 4

    for est in ESTIMATORS:
        for i, s in enumerate(student):
            for j, t in enumerate(teacher):
                want = mean_hsic(s, t, est) / math.sqrt(mean_hsic(s, s, est)
                                                        * mean_hsic(t, t, est))
                assert float(result.matrix(est)[i, j]) == pytest.approx(want, abs=1e-10)


def test_masked_tokens_count_as_absent() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 5, 3, generator=g, dtype=torch.float64)
    mask = torch.ones(8, 5, dtype=torch.bool)
    mask[:, 3:] = False
    padded = x.clone()
    padded[:, 3:] = 1e6  # garbage in padding must not matter
    assert torch.allclose(sample_gram(padded, mask), sample_gram(x[:, :3]))
    pooled = sample_gram(padded, mask, mode="mean")
    assert torch.allclose(pooled, sample_gram(x[:, :3].mean(dim=1)))


def test_debiased_is_near_population_value_where_biased_is_not() -> None:
    """Independent high-dimensional features: population CKA is 0. The biased estimator is
    far from 0 at this batch size and stays there with more batches; the debiased one
    averages to about 0."""
    g = torch.Generator().manual_seed(5)
    acc = StreamingCKA([0], [0])
    for _ in range(10):
        acc.update([torch.randn(32, 16, 64, generator=g)], [torch.randn(32, 16, 64, generator=g)])
    result = acc.compute()
    assert abs(float(result.debiased[0, 0])) < 0.05
    assert float(result.biased[0, 0]) > 0.5


def test_debiased_recovers_a_known_population_cka() -> None:
    """y = x + noise with isotropic x, noise in d dims: population linear CKA is
    tr(S_x S_y)/sqrt(tr(S_x^2) tr(S_y^2)) = 1/sqrt(1 * (1+s^2)^2) for noise variance s^2."""
    g = torch.Generator().manual_seed(6)
    d, noise = 256, 1.0
    acc = StreamingCKA([0], [0])
    for _ in range(12):
        x = torch.randn(16, d, generator=g, dtype=torch.float64)
        acc.update([x], [x + noise * torch.randn(16, d, generator=g, dtype=torch.float64)])
    population = 1.0 / (1.0 + noise**2)
    result = acc.compute()
    assert float(result.debiased[0, 0]) == pytest.approx(population, abs=0.05)
    assert float(result.biased[0, 0]) - population > 0.2


def test_result_round_trips_through_json_dict() -> None:
    acc = StreamingCKA([2, 4], [1])
    g = torch.Generator().manual_seed(7)
    acc.update([torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)],
               [torch.randn(6, 2, generator=g)])
    result = acc.compute()
    back = CKAResult.from_dict(result.to_dict())
    assert torch.allclose(back.debiased, result.debiased)
    assert back.student_layers == [2, 4] and back.num_samples == 6


def test_too_few_samples_is_a_clear_error() -> None:
    acc = StreamingCKA([0], [0])
    with pytest.raises(RocketError, match="at least 4 samples"):
        acc.update([torch.randn(3, 4)], [torch.randn(3, 4)])
    with pytest.raises(RocketError, match="raise --samples"):
        batch_sizes(3, 16)
    with pytest.raises(RocketError, match="no batch"):
        acc.compute()
    with pytest.raises(RocketError, match="batch size"):
        acc.update([torch.randn(5, 4)], [torch.randn(6, 4)])


@pytest.mark.parametrize(("n", "b"), [(5, 4), (100, 16), (4, 64), (33, 8), (2000, 64)])
def test_batch_sizes_cover_all_samples_and_respect_the_minimum(n: int, b: int) -> None:
    sizes = batch_sizes(n, b)
    assert sum(sizes) == n and min(sizes) >= 4 and max(sizes) - min(sizes) <= 1
