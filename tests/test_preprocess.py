"""Preprocessing presets on real rendered LIBERO frames, against PIL / scipy computations."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from rocket_vla.data.preprocess import (
    center_crop_resize,
    get_preset,
    jpeg_round_trip,
    openpi,
    openvla_oft,
    resize_with_pad,
)
from rocket_vla.errors import RocketError


@pytest.fixture(scope="module")
def frames() -> dict[str, np.ndarray]:
    """A 256 px agentview and wrist frame of libero_spatial task 0 after the no-op wait."""
    pytest.importorskip("libero.libero")
    from rocket_vla.envs.episode import NOOP_ACTION
    from rocket_vla.envs.libero_env import EnvConfig, LiberoEnv
    from rocket_vla.envs.suites import get_init_state, get_task

    task = get_task("libero_spatial", 0)
    with LiberoEnv(task, EnvConfig(image_size=256)) as env:
        env.reset(get_init_state(task, 0))
        env.step(NOOP_ACTION, render=True)
        obs = env.observation()
    return {"agentview": obs["agentview"], "wrist": obs["wrist"]}


@pytest.mark.libero
def test_openvla_oft_preset_is_jpeg_then_lanczos(frames) -> None:
    for img in frames.values():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=95)
        decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        np.testing.assert_array_equal(jpeg_round_trip(img), decoded)
        assert np.any(decoded != img)  # the round trip really changes pixels ...
        mse = np.mean((decoded.astype(float) - img) ** 2)
        assert 10 * math.log10(255**2 / mse) > 30  # ... but only by JPEG-95 artefacts
        ref = np.asarray(Image.fromarray(decoded).resize((224, 224), Image.Resampling.LANCZOS))
        out = openvla_oft(img)
        assert out.shape == (224, 224, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, ref)


@pytest.mark.libero
def test_center_crop_matches_crop_and_resize_sampling(frames) -> None:
    """Bilinear samples at tf.image.crop_and_resize's points, computed with scipy."""
    from scipy.ndimage import map_coordinates

    img = openvla_oft(frames["agentview"])
    out = center_crop_resize(img, 0.9)
    n = 224
    s = math.sqrt(0.9)
    y0, y1 = (1 - s) / 2, (1 + s) / 2
    pts = y0 * (n - 1) + np.arange(n) * (y1 - y0) * (n - 1) / (n - 1)
    yy, xx = np.meshgrid(pts, pts, indexing="ij")
    ref = np.stack([map_coordinates(img[..., c].astype(float), [yy, xx], order=1) for c in range(3)], -1)
    np.testing.assert_array_equal(out, np.clip(np.round(ref), 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(openvla_oft(frames["agentview"], center_crop=True), out)
    assert get_preset("openvla-oft-crop")(frames["agentview"]).shape == (224, 224, 3)


@pytest.mark.libero
def test_openpi_resize_with_pad(frames) -> None:
    square = frames["wrist"]
    ref = np.asarray(Image.fromarray(square).resize((224, 224), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(openpi(square), ref)  # square: no padding at all
    wide = frames["agentview"][64:192]  # 128 x 256: scaled to 112 x 224, 56 black rows above/below
    out = resize_with_pad(wide, 224, 224)
    ref = np.asarray(Image.fromarray(wide).resize((224, 112), Image.Resampling.BILINEAR))
    assert out.shape == (224, 224, 3)
    np.testing.assert_array_equal(out[56:168], ref)
    assert not out[:56].any() and not out[168:].any()
    tall = frames["agentview"][:, 100:175]  # 256 x 75 -> int(75 / (256/224)) = 65 wide, padded 79 | 80
    out = resize_with_pad(tall, 224, 224)
    ref = np.asarray(Image.fromarray(tall).resize((65, 224), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(out[:, 79:144], ref)
    assert not out[:, :79].any() and not out[:, 144:].any()


def test_presets_reject_bad_input() -> None:
    with pytest.raises(RocketError, match="unknown preprocessing preset"):
        get_preset("llava")
    with pytest.raises(RocketError, match="expected a uint8 image"):
        openpi(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(RocketError, match="crop area"):
        center_crop_resize(np.zeros((8, 8, 3), dtype=np.uint8), 1.5)
