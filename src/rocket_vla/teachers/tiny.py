"""The bundled tiny geometry teacher: the default teacher of offline runs.

A small VGGT-architecture aggregator trained by ``rocket train-teacher`` on LIBERO frames
to predict depth and world points of the agent-view and wrist cameras (see
``assets/tiny_teacher/MODEL_CARD.md`` for data, recipe and held-out errors). It ships
inside the package so that alignment runs, tests and the demo need no download; only the
aggregator is a teacher (the depth/point heads in the file are skipped when loading).

Its native input is ``NATIVE_INPUT_SIZE`` px (8x8 patches of 14 px). ``input_size`` lets
a caller choose another side (frames are resized inside the teacher through
`TeacherInput`); 56 px (4x4 patches) was also seen in training, other sizes work
(position table and RoPE adapt) but are off the training distribution.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from importlib import resources
from pathlib import Path

import torch

from rocket_vla.errors import RocketError
from rocket_vla.teachers.base import TeacherInput
from rocket_vla.teachers.vggt import VGGTConfig, VGGTTeacher

ASSET_DIR = "assets/tiny_teacher"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
NATIVE_INPUT_SIZE = 112


def _asset(name: str):
    return resources.files("rocket_vla").joinpath(f"{ASSET_DIR}/{name}")


def tiny_teacher_config() -> dict:
    """The shipped ``config.json``: aggregator sizes, native input size, training recipe."""
    node = _asset(CONFIG_FILE)
    if not node.is_file():
        raise RocketError(
            "the bundled tiny teacher is missing from this install (assets/tiny_teacher); "
            "reinstall rocket-vla or pass --teacher with a checkpoint path."
        )
    try:
        config = json.loads(node.read_text())
        VGGTConfig(**config["aggregator"])
    except (ValueError, KeyError, TypeError) as err:
        raise RocketError(
            f"the bundled tiny teacher's config.json is damaged ({type(err).__name__}); reinstall "
            "rocket-vla or pass --teacher with a checkpoint path."
        ) from err
    return config


def _size_pair(input_size: int | tuple[int, int] | None, native: int) -> tuple[int, int]:
    if input_size is None:
        return native, native
    if isinstance(input_size, int):
        return input_size, input_size
    h, w = input_size
    return int(h), int(w)


def load_tiny_teacher(
    input_size: int | tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
    *,
    autocast: str = "auto",
) -> VGGTTeacher:
    """The bundled teacher (offline), seeing frames resized to ``input_size``.

    ``input_size``: a side or (height, width), multiples of 14; ``None`` = the native
    112 px. Features: ``num_layers`` = 4 block pairs, ``dim`` = 192, grid = side / 14.
    """
    config = tiny_teacher_config()
    agg = VGGTConfig(**config["aggregator"])
    size = _size_pair(input_size, int(config.get("native_input_size", NATIVE_INPUT_SIZE)))
    if size[0] % agg.patch_size or size[1] % agg.patch_size or min(size) <= 0:
        raise RocketError(
            f"tiny teacher input size {size[0]}x{size[1]} is not a multiple of its patch size "
            f"{agg.patch_size}; use e.g. 56 or {NATIVE_INPUT_SIZE}."
        )
    with ExitStack() as stack:
        path: Path = stack.enter_context(resources.as_file(_asset(WEIGHTS_FILE)))
        teacher = VGGTTeacher.from_checkpoint(
            path, agg, TeacherInput(size=size, autocast=autocast), device=device
        )
    teacher.name = "tiny-geometry"
    return teacher
