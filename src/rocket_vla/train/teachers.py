"""Build the teacher a training run names (``--teacher``), only when the variant needs one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rocket_vla.errors import RocketError


def build_teacher(spec: str, size: int, device: str = "cpu") -> Any:
    """``"tiny"``: the bundled tiny geometry teacher; ``"random-tiny"``: a tiny VGGT with
    random weights (pipeline checks and benchmarks only, never a spatial teacher); a
    ``.pt``/``.safetensors`` file: VGGT-1B weights; a folder: a transformers backbone."""
    from rocket_vla.teachers.build import TeacherConfig
    from rocket_vla.teachers.build import build_teacher as build

    common = dict(input_size=(size, size), device=device)
    if spec == "random-tiny":
        return build(TeacherConfig(kind="vggt-random", vggt_size="tiny", **common))
    if spec == "tiny":
        try:
            from rocket_vla.teachers.tiny import load_tiny_teacher  # type: ignore[import-not-found]
        except ImportError:
            raise RocketError(
                "the bundled tiny teacher is not available in this install; pass --teacher "
                "random-tiny or a VGGT checkpoint path."
            ) from None
        return load_tiny_teacher(input_size=(size, size), device=device)
    path = Path(spec)
    if not path.exists():
        raise RocketError(
            f"teacher {spec!r} is neither 'tiny', 'random-tiny' nor an existing checkpoint "
            "file or folder; pass one of those."
        )
    kind = "hf" if path.is_dir() else "vggt"
    return build(TeacherConfig(kind=kind, path=str(path), **common))
