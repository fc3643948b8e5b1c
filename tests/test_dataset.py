"""Dataset samples, q01/q99 normalisation and crop-box augmentation."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from minivla_fixtures import make_episodes, single_thread

from rocket_vla.data.augment import AugmentConfig, augment_views, crop_resize, random_boxes
from rocket_vla.data.dataset import ChunkDataset, fit_stats, images_to_float
from rocket_vla.data.normalize import DatasetStats, NormStats
from rocket_vla.errors import RocketError

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 40), st.integers(1, 7)), elements=finite))
def test_normalisation_round_trip_inside_quantiles(data: np.ndarray) -> None:
    stats = NormStats.fit(data)
    inside = np.clip(data, stats.low, stats.high)
    y = stats.normalize(inside)
    assert np.all(np.abs(y) <= 1.0)
    back = stats.unnormalize(y)
    varying = (stats.high - stats.low) >= 1e-8
    scale = np.maximum(1.0, np.abs(stats.high - stats.low))
    assert np.all(np.abs(back - inside)[:, varying] <= 1e-5 * scale[varying])
    # constant dimensions come back as their (single) value
    assert np.allclose(back[:, ~varying], stats.low[~varying])


@settings(max_examples=30, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 30), st.integers(1, 5)), elements=finite))
def test_normalisation_stats_survive_json(data: np.ndarray) -> None:
    stats = DatasetStats(NormStats.fit(data), NormStats.fit(data[:, :1]))
    again = DatasetStats.from_dict(stats.to_dict())
    assert np.array_equal(again.action.low, stats.action.low)
    assert np.array_equal(again.proprio.high, stats.proprio.high)


def test_normalisation_rejects_wrong_dims() -> None:
    stats = NormStats.fit(np.random.default_rng(0).normal(size=(20, 7)))
    with pytest.raises(RocketError, match="7 dims"):
        stats.normalize(np.zeros((3, 6)))


def test_chunks_pad_and_mask_at_episode_end() -> None:
    episodes = make_episodes(n=2, length=10)
    ds = ChunkDataset(episodes, fit_stats(episodes), chunk=8)
    assert len(ds) == 20
    last = ds[9]  # step 9 of episode 0: one valid action, seven padded
    assert last["action_mask"].tolist() == [True] + [False] * 7
    assert torch.equal(last["actions"][1], last["actions"][0])
    first = ds[0]
    assert first["action_mask"].all()
    expected = ds.stats.action.normalize(episodes[0].actions[:8])
    assert np.allclose(first["actions"].numpy(), expected)
    assert first["images"].shape == (2, 32, 32, 3) and first["images"].dtype == torch.uint8
    assert first["proprio"].shape == (8,)
    assert first["instruction"] == episodes[0].language  # raw text: students tokenise it
    assert (int(ds[12]["episode"]), int(ds[12]["step"])) == (1, 2)


def test_dataset_rejects_non_libero_layout() -> None:
    episodes = make_episodes(n=1, length=4)
    del episodes[0].obs["eye_in_hand_rgb"]
    with pytest.raises(RocketError, match="LIBERO layout"):
        ChunkDataset(episodes, fit_stats(make_episodes(n=1, length=4)))


def test_random_boxes_cover_the_requested_area() -> None:
    boxes = random_boxes(500, 0.9, torch.Generator().manual_seed(0))
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert torch.allclose(areas, torch.full_like(areas, 0.9), atol=1e-5)
    assert boxes.min() >= 0 and boxes.max() <= 1 + 1e-6


def test_crop_box_describes_the_pixels_the_student_sees() -> None:
    # A horizontal ramp image: value = x coordinate of the pixel centre (fraction of width).
    w = 64
    ramp = ((torch.arange(w) + 0.5) / w).view(1, 1, 1, w).expand(1, 3, w, w).contiguous()
    box = torch.tensor([[0.2, 0.1, 0.8, 0.7]])
    out = crop_resize(ramp, box, 16)
    centres = 0.2 + 0.6 * (torch.arange(16) + 0.5) / 16
    assert torch.allclose(out[0, 0, 5], centres, atol=1e-4)


def test_augment_views_returns_boxes_and_is_seeded() -> None:
    frames = images_to_float(torch.randint(0, 255, (3, 2, 40, 40, 3), dtype=torch.uint8))
    cfg = AugmentConfig()
    a, boxes = augment_views(frames, 32, cfg, torch.Generator().manual_seed(1))
    b, boxes2 = augment_views(frames, 32, cfg, torch.Generator().manual_seed(1))
    assert a.shape == (3, 2, 3, 32, 32) and boxes.shape == (3, 2, 4)
    assert torch.equal(a, b) and torch.equal(boxes, boxes2)
    assert a.min() >= 0 and a.max() <= 1
    plain, full = augment_views(frames, 32, AugmentConfig(enabled=False), None)
    assert torch.equal(full, torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(3, 2, 4))
