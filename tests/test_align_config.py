"""Presets, Matryoshka widths, layer pairing and every configuration error."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rocket_vla.align import (
    PAPER_PAIRS,
    AlignConfig,
    Aligner,
    balanced_select,
    matryoshka_widths,
    pair_hungarian,
    pair_monotone,
    resolve_layers,
)
from rocket_vla.errors import RocketError


def test_matryoshka_widths_paper_values() -> None:
    assert matryoshka_widths(2048, 10) == [409, 591, 773, 955, 1137, 1319, 1501, 1683, 1865, 2048]
    assert matryoshka_widths(2048, 10, reverse=True)[0] == 2048
    assert matryoshka_widths(100, ratios=[0.5, 1.0]) == [50, 100]
    # one pair: ratio 0.2, int(4 * 0.2) = 0 -> 1, as the official AlignProjector computes it
    # (0.2 + 0.8 * i / max(n - 1, 1); openvla-ROCKET/prismatic/models/projectors_rocket.py)
    assert matryoshka_widths(4, 1) == [1]


def test_presets_build_the_paper_variants() -> None:
    kw = dict(student_dim=4096, teacher_dim=2048, layout="openvla")
    rocket = Aligner(AlignConfig.preset("rocket", **kw))
    assert rocket.config.student_layers == PAPER_PAIRS["openvla"][0]
    assert rocket.projectors.shared and len(rocket.projectors.members[0]) == 1
    assert rocket.projectors.widths[0] == 409 and rocket.projectors.widths[-1] == 2048

    shared = Aligner(AlignConfig.preset("shared", **kw))
    assert shared.projectors.widths == [2048] * 10

    naive = Aligner(AlignConfig.preset("naive", **kw))
    assert len(naive.projectors.members[0]) == 10
    # independent projectors run at their FULL width (the official code used 20%)
    assert naive.projectors.widths == [2048] * 10
    assert all(p.fc1.out_features == 2048 for p in naive.projectors.members[0])

    sf = AlignConfig.preset("spatial_forcing", **kw)
    assert (sf.student_layers, sf.teacher_layers, sf.projector) == ([24], [-1], "independent")
    sf_generic = AlignConfig.preset("spatial_forcing", student_depth=18, teacher_depth=24,
                                    student_dim=8, teacher_dim=8)
    assert sf_generic.student_layers == [14]

    base = AlignConfig.preset("baseline")
    assert not base.enabled and base.weight == 0.0


def test_balanced_preset_and_resolution() -> None:
    cfg = AlignConfig.preset("rocket", student_depth=32, teacher_depth=24, student_dim=8,
                             teacher_dim=8, num_pairs=10)
    assert len(cfg.student_layers) == 10 and cfg.student_layers[-1] == 32
    assert cfg.teacher_layers[-1] == 24
    resolved = AlignConfig(student_layers=[1, -1], teacher_layers=[2, -1], student_dim=4,
                           teacher_dim=4, student_depth=6, teacher_depth=8).resolved()
    assert (resolved.student_layers, resolved.teacher_layers) == ([1, 6], [2, 8])


def test_balanced_select_hand_computed() -> None:
    assert balanced_select(8, 4) == [1, 3, 5, 7]  # n mod k == 0: keep n-1-i*n/k
    assert balanced_select(6, 4) == [1, 2, 4, 5]  # n mod (n-k) == 0: drop i*n/(n-k) = 0, 3
    # else: floor(n - 1 - i*n/k + 0.5); n=24, k=10
    assert balanced_select(24, 10) == [1, 4, 6, 9, 11, 13, 16, 18, 21, 23]
    assert balanced_select(5, 9) == [0, 1, 2, 3, 4]


def test_resolve_layers_convention() -> None:
    assert resolve_layers([0, -1, -2], 4) == [0, 4, 3]


def _brute_hungarian(sim: torch.Tensor) -> float:
    rows, cols = sim.shape
    k = min(rows, cols)
    best = -float("inf")
    for rs in itertools.combinations(range(rows), k):
        for cs in itertools.permutations(range(cols), k):
            best = max(best, sum(sim[r, c].item() for r, c in zip(rs, cs, strict=True)))
    return best


def _brute_monotone(sim: torch.Tensor, k: int) -> float:
    rows, cols = sim.shape
    return max(
        sum(sim[r, c].item() for r, c in zip(rs, cs, strict=True))
        for rs in itertools.combinations(range(rows), k)
        for cs in itertools.combinations(range(cols), k)
    )


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 4), cols=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_pairings_equal_brute_force(rows: int, cols: int, seed: int) -> None:
    sim = torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    hung = pair_hungarian(sim)
    assert len({r for r, _ in hung}) == len(hung) == min(rows, cols)
    assert sum(sim[r, c].item() for r, c in hung) == pytest.approx(_brute_hungarian(sim))
    for k in range(1, min(rows, cols) + 1):
        mono = pair_monotone(sim, k)
        assert len(mono) == k
        assert all(a[0] < b[0] and a[1] < b[1] for a, b in itertools.pairwise(mono))
        assert sum(sim[r, c].item() for r, c in mono) == pytest.approx(_brute_monotone(sim, k))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: AlignConfig(student_layers=[1, 2], teacher_layers=[1], student_dim=4,
                             teacher_dim=4), "one teacher layer per student layer"),
        (lambda: AlignConfig(student_layers=[], teacher_layers=[], student_dim=4,
                             teacher_dim=4), "no layer pairs"),
        (lambda: AlignConfig(student_layers=[9], teacher_layers=[1], student_dim=4,
                             teacher_dim=4, student_depth=8), "out of range"),
        (lambda: AlignConfig(student_layers=[1], teacher_layers=[30], student_dim=4,
                             teacher_dim=4, teacher_depth=24), "out of range"),
        (lambda: AlignConfig(student_layers=[3, 2], teacher_layers=[1, 2], student_dim=4,
                             teacher_dim=4, matryoshka=True), "strictly ascending"),
        (lambda: AlignConfig(student_layers=[1, 2], teacher_layers=[5, 2], student_dim=4,
                             teacher_dim=4, matryoshka=True), "strictly ascending"),
        (lambda: AlignConfig(student_layers=[1, 2], teacher_layers=[1, 2], student_dim=4,
                             teacher_dim=4, matryoshka=True, projector="independent"),
         "shared projector"),
        (lambda: AlignConfig(student_layers=[1, 2], teacher_layers=[1, 2], student_dim=4,
                             teacher_dim=4, matryoshka=True, matryoshka_ratios=[0.5]),
         "one per pair"),
        (lambda: AlignConfig(student_layers=[1, 2], teacher_layers=[1, 2], student_dim=4,
                             teacher_dim=4, matryoshka=True, matryoshka_ratios=[0.0, 1.0]),
         "outside"),
        (lambda: AlignConfig(student_layers=[1], teacher_layers=[1]), "must be positive"),
        (lambda: AlignConfig(student_layers=[1], teacher_layers=[1], student_dim=4,
                             teacher_dim=4, projector="mlp"), "unknown projector"),
        (lambda: AlignConfig.preset("repa"), "unknown variant"),
        (lambda: AlignConfig.preset("rocket", student_dim=4, teacher_dim=4), "needs layer pairs"),
        (lambda: AlignConfig.from_dict({"student_layer": [1]}), "unknown alignment config keys"),
    ],
)
def test_bad_configs_raise_one_clear_error(build, message: str) -> None:
    with pytest.raises(RocketError, match=message):
        Aligner(build())


def test_runtime_dimension_mismatches_are_clear() -> None:
    aligner = Aligner(AlignConfig(student_layers=[1], teacher_layers=[1], student_dim=4,
                                  teacher_dim=3, hidden_dim=8))
    with pytest.raises(RocketError, match="student_dim"):
        aligner([torch.randn(1, 2, 5)], [torch.randn(1, 2, 3)])
    with pytest.raises(RocketError, match="teacher_dim"):
        aligner([torch.randn(1, 2, 4)], [torch.randn(1, 2, 7)])
    with pytest.raises(RocketError, match="resample the teacher"):
        aligner([torch.randn(1, 2, 4)], [torch.randn(1, 3, 3)])
    with pytest.raises(RocketError, match="one per pair"):
        aligner([torch.randn(1, 2, 4)] * 2, [torch.randn(1, 2, 3)] * 2)


def test_official_openvla_layout_differs_only_in_the_last_student_layer() -> None:
    """The official run's "-1" was hidden_states[31] (block 31's output): the same pairs as
    the paper's "openvla" layout except the deepest student layer, 31 instead of 32."""
    ours, official = PAPER_PAIRS["openvla"], PAPER_PAIRS["openvla-official"]
    assert ours[1] == official[1] and ours[0][:-1] == official[0][:-1]
    assert (ours[0][-1], official[0][-1]) == (32, 31)
    cfg = AlignConfig.preset("rocket", layout="openvla-official", student_dim=8, teacher_dim=8,
                             student_depth=32, teacher_depth=24)
    assert cfg.resolved().student_layers[-1] == 31
