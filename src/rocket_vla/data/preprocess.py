"""Image preprocessing presets of the official LIBERO clients, as plain numpy/PIL functions.

A checkpoint trained elsewhere expects its frames prepared exactly as its own evaluation
client prepares them; a policy wrapper picks the matching preset and applies it to the
``agentview`` / ``wrist`` frames the runner hands it (already rotated by 180 degrees).

``openvla-oft`` (OpenVLA-OFT's LIBERO client): JPEG encode/decode round trip (the RLDS
training images were JPEG-compressed, so the model has only seen JPEG artefacts), resize to
224 x 224 with a Lanczos filter, and -- for models trained with random crops -- a centre
crop of 90% of the image area resized back to 224 with bilinear sampling at corner-aligned
points (``tf.image.crop_and_resize`` semantics). The official client runs these through
TensorFlow (JPEG quality 95, ``lanczos3`` with antialiasing); here PIL does them, so pixels
may differ by a few grey levels from the TensorFlow path: the preset reproduces the
operations and their parameters, not TensorFlow's kernels bit for bit.

``openpi`` (openpi's LIBERO client): resize with padding to 224 x 224 (aspect ratio kept,
bilinear, the image pasted centred on black), as ``openpi_client.image_tools.resize_with_pad``.

Both take and return ``uint8 [H, W, 3]`` arrays.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from functools import partial

import numpy as np

from rocket_vla.errors import RocketError

#: Output side of both presets (the vision towers of OpenVLA and PaliGemma read 224 px).
SIZE = 224
#: JPEG quality of TensorFlow's ``encode_jpeg`` default, which the OpenVLA-OFT client uses.
JPEG_QUALITY = 95
#: Fraction of the image area kept by OpenVLA-OFT's centre crop.
CROP_AREA = 0.9


def _check(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise RocketError(
            f"expected a uint8 image [H, W, 3], got {arr.dtype} {tuple(arr.shape)}; pass the "
            "frames the runner provides (obs['agentview'])."
        )
    return np.ascontiguousarray(arr)


def jpeg_round_trip(image: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """Encode as JPEG and decode again (the artefacts a JPEG-trained model expects)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_check(image)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def resize_lanczos(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Resize to ``size x size`` with PIL's Lanczos (a = 3) filter."""
    from PIL import Image

    return np.asarray(Image.fromarray(_check(image)).resize((size, size), Image.Resampling.LANCZOS))


def center_crop_resize(image: np.ndarray, area: float = CROP_AREA) -> np.ndarray:
    """Keep the centred square-fraction ``area`` of the image and resize it back to its size.

    Follows ``tf.image.crop_and_resize`` with the normalised box
    ``[(1 - s) / 2, (1 + s) / 2]`` (s = sqrt(area)) per axis: output pixel i samples the
    input at ``y0 (H - 1) + i (y1 - y0) (H - 1) / (H_out - 1)`` with bilinear interpolation
    (OpenVLA-OFT's evaluation-time counterpart of its random 90%-area training crop).
    """
    img = _check(image).astype(np.float64)
    if not 0.0 < area <= 1.0:
        raise RocketError(f"crop area {area} must be in (0, 1]; OpenVLA-OFT uses 0.9.")
    h, w = img.shape[:2]
    side = math.sqrt(area)
    lo, hi = (1.0 - side) / 2.0, (1.0 + side) / 2.0
    ys = lo * (h - 1) + np.arange(h) * (hi - lo) * (h - 1) / max(h - 1, 1)
    xs = lo * (w - 1) + np.arange(w) * (hi - lo) * (w - 1) / max(w - 1, 1)
    y0 = np.clip(np.floor(ys).astype(int), 0, h - 1)
    x0 = np.clip(np.floor(xs).astype(int), 0, w - 1)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bottom = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    out = top * (1 - fy) + bottom * fy
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def openvla_oft(image: np.ndarray, center_crop: bool = False, size: int = SIZE) -> np.ndarray:
    """OpenVLA-OFT's LIBERO frame preparation: JPEG round trip, Lanczos to 224, optional crop."""
    out = resize_lanczos(jpeg_round_trip(image), size)
    return center_crop_resize(out) if center_crop else out


def resize_with_pad(image: np.ndarray, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """Scale to fit inside ``height x width`` keeping the aspect ratio (bilinear), centred on
    black -- openpi's ``resize_with_pad`` (integer sizes truncated, padding split with the
    extra pixel at the bottom/right)."""
    from PIL import Image

    img = Image.fromarray(_check(image))
    cur_w, cur_h = img.size
    if (cur_w, cur_h) == (width, height):
        return np.asarray(img)
    ratio = max(cur_w / width, cur_h / height)
    new_w, new_h = int(cur_w / ratio), int(cur_h / ratio)
    resized = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    canvas = Image.new(resized.mode, (width, height), 0)
    canvas.paste(resized, (max(0, (width - new_w) // 2), max(0, (height - new_h) // 2)))
    return np.asarray(canvas)


def openpi(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """openpi's LIBERO frame preparation: resize with padding to 224 x 224."""
    return resize_with_pad(image, size, size)


PRESETS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": _check,
    "openvla-oft": openvla_oft,
    "openvla-oft-crop": partial(openvla_oft, center_crop=True),
    "openpi": openpi,
}


def get_preset(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """A preset by name: ``none``, ``openvla-oft``, ``openvla-oft-crop`` or ``openpi``."""
    try:
        return PRESETS[name]
    except KeyError:
        raise RocketError(
            f"unknown preprocessing preset {name!r}; use one of {', '.join(PRESETS)}."
        ) from None
