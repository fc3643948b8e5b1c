"""Layer pairing from a similarity map equals brute force (tests align/pairing.py too)."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rocket_vla.align.pairing import pair_hungarian, pair_monotone
from rocket_vla.analysis.pairs import hungarian_k, recommend_pairs
from rocket_vla.errors import RocketError


def _brute(sim: torch.Tensor, k: int, monotone: bool) -> float:
    rows, cols = sim.shape
    best = -float("inf")
    for rs in itertools.combinations(range(rows), k):
        col_orders = (itertools.combinations(range(cols), k) if monotone
                      else itertools.permutations(range(cols), k))
        for cs in col_orders:
            best = max(best, float(sum(sim[r, c] for r, c in zip(rs, cs, strict=True))))
    return best


def _total(sim: torch.Tensor, pairs: list[tuple[int, int]]) -> float:
    return float(sum(sim[r, c] for r, c in pairs))


def _valid(pairs: list[tuple[int, int]], k: int, monotone: bool) -> bool:
    rows = [r for r, _ in pairs]
    cols = [c for _, c in pairs]
    ok = len(pairs) == k and len(set(rows)) == k and len(set(cols)) == k
    if monotone:
        ok = ok and rows == sorted(rows) and cols == sorted(cols)
    return ok and rows == sorted(rows)


matrices = st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(0, 10_000)).map(
    lambda t: torch.randn(t[0], t[1], generator=torch.Generator().manual_seed(t[2]),
                          dtype=torch.float64)
)


@settings(max_examples=60, deadline=None)
@given(sim=matrices)
def test_hungarian_equals_brute_force(sim: torch.Tensor) -> None:
    k = min(sim.shape)
    pairs = pair_hungarian(sim)
    assert _valid(pairs, k, monotone=False)
    assert _total(sim, pairs) == pytest.approx(_brute(sim, k, monotone=False), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(sim=matrices, data=st.data())
def test_monotone_equals_brute_force(sim: torch.Tensor, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, min(sim.shape)))
    pairs = pair_monotone(sim, k)
    assert _valid(pairs, k, monotone=True)
    assert _total(sim, pairs) == pytest.approx(_brute(sim, k, monotone=True), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(sim=matrices, data=st.data())
def test_hungarian_with_k_pairs_equals_brute_force(sim: torch.Tensor, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, min(sim.shape)))
    pairs = hungarian_k(sim, k)
    assert _valid(pairs, k, monotone=False)
    assert _total(sim, pairs) == pytest.approx(_brute(sim, k, monotone=False), abs=1e-9)


def test_recommend_pairs_maps_positions_to_layer_indices() -> None:
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.1, 0.8], [0.1, 0.7, 0.3]])
    student, teacher = recommend_pairs(sim, [4, 8, 12], [3, 6, 9], "hungarian")
    assert (student, teacher) == ([4, 8, 12], [3, 9, 6])
    student, teacher = recommend_pairs(sim, [4, 8, 12], [3, 6, 9], "monotone", num_pairs=2)
    assert (student, teacher) == ([4, 8], [3, 9])


def test_nan_cells_are_never_preferred() -> None:
    sim = torch.tensor([[float("nan"), 0.1], [0.2, 0.3]])
    assert recommend_pairs(sim, [1, 2], [1, 2], "hungarian") == ([1, 2], [2, 1])


def test_bad_pair_counts_are_clear_errors() -> None:
    sim = torch.zeros(3, 2)
    with pytest.raises(RocketError, match="ask for 1..2"):
        recommend_pairs(sim, [1, 2, 3], [1, 2], "hungarian", num_pairs=3)
    with pytest.raises(RocketError, match="similarity map is"):
        recommend_pairs(sim, [1, 2], [1, 2])
