"""Build a teacher: from a small dataclass config (:func:`build_teacher`, what commands and
presets hold), or from the one-word spec a run names (:func:`teacher_from_spec`, ``--teacher``).

Kinds:

* ``vggt``       -- our VGGT aggregator loaded from the official checkpoint (``path``:
                    ``model.pt`` or ``.safetensors``, full model or aggregator-only);
* ``hf``         -- a transformers backbone from a local directory (``path``);
* ``vggt-random``-- a VGGT of ``vggt_size`` (``tiny`` or ``1b``) with seeded random weights.
                    It computes real features of an untrained network: useful to exercise
                    pipelines offline and for benchmarks, never as a spatial teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rocket_vla.errors import RocketError
from rocket_vla.teachers.base import Teacher, TeacherInput, TeacherRuntime

KINDS = ("vggt", "hf", "vggt-random")


@dataclass
class TeacherConfig:
    kind: str = "vggt"
    """vggt (official checkpoint), hf (a transformers backbone folder) or vggt-random"""
    path: str | None = None
    """VGGT model.pt/.safetensors, or a transformers folder (local; nothing is downloaded)"""
    input_size: tuple[int, int] | int | str | None = None
    """(H, W) the teacher sees, sides multiples of its patch ("224x308", 518 or [H, W]; None:
    frames as given)"""
    autocast: str = "auto"
    """auto, off, bfloat16 or float16"""
    dtype: str = "auto"
    """weights dtype: auto = float32 under autocast (the official recipe), or bfloat16 weights
    (opt-in: faster, further from float32; the official pi0 JAX run cast VGGT so)"""
    device: str = "cpu"
    """torch device of the teacher"""
    vggt_size: str = "1b"
    """for vggt / vggt-random: 1b or tiny"""
    seed: int = 0
    """weights seed of vggt-random"""

    def __post_init__(self) -> None:
        if isinstance(self.input_size, (int, str)):
            self.input_size = parse_size(str(self.input_size))
        elif self.input_size is not None:
            self.input_size = (int(self.input_size[0]), int(self.input_size[1]))


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"518"`` or ``"224x308"`` (height x width) -> (H, W); empty -> None."""
    if not text:
        return None
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise RocketError(f"input size {text!r} is not HxW or a single side; write e.g. 224x224.")
    return parts[0], parts[1]


def build_teacher(cfg: TeacherConfig) -> Teacher:
    """Instantiate the configured teacher on its device (weights from local files only)."""
    from rocket_vla.teachers.vggt import VGGTConfig, VGGTTeacher

    if cfg.kind not in KINDS:
        raise RocketError(f"teacher kind {cfg.kind!r} is unknown; use one of {KINDS}.")
    inp = TeacherInput(size=cfg.input_size, autocast=cfg.autocast)
    device = torch.device(cfg.device)
    sizes = {"1b": VGGTConfig.vggt_1b, "tiny": VGGTConfig.tiny}
    if cfg.vggt_size not in sizes:
        raise RocketError(f"VGGT size {cfg.vggt_size!r} is unknown; use one of {sorted(sizes)}.")
    runtime = TeacherRuntime(dtype=cfg.dtype)
    if cfg.kind == "vggt-random":
        return VGGTTeacher(sizes[cfg.vggt_size](), inp, device=device, seed=cfg.seed, runtime=runtime)
    if not cfg.path:
        raise RocketError(
            f"the {cfg.kind} teacher needs weights; pass --teacher.path (a local file or folder)."
        )
    if cfg.kind == "vggt":
        return VGGTTeacher.from_checkpoint(cfg.path, sizes[cfg.vggt_size](), inp, device=device,
                                           runtime=runtime)
    if runtime.dtype not in ("auto", "float32"):
        raise RocketError(f"the hf teacher keeps float32 weights; drop --teacher.dtype {cfg.dtype}.")
    from rocket_vla.teachers.hf import HFTeacher

    return HFTeacher.from_pretrained(cfg.path, inp, device=device)


def teacher_from_spec(spec: str, size: int, device: str = "cpu", dtype: str = "auto") -> Teacher:
    """The teacher a run names, seeing ``size`` x ``size`` inputs: ``"tiny"``, the bundled tiny
    geometry teacher; ``"random-tiny"``, a tiny VGGT with random weights (pipeline checks and
    benchmarks only, never a spatial teacher); a ``.pt``/``.safetensors`` file, VGGT-1B
    weights; a folder, a transformers backbone. ``dtype``: :attr:`TeacherConfig.dtype`."""
    common = dict(input_size=(size, size), device=device, dtype=dtype)
    if spec == "random-tiny":
        return build_teacher(TeacherConfig(kind="vggt-random", vggt_size="tiny", **common))
    if spec == "tiny" and dtype not in ("auto", "float32"):
        raise RocketError(f"the bundled tiny teacher keeps its float32 weights; drop --teacher_dtype "
                          f"{dtype}.")
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
    return build_teacher(TeacherConfig(kind=kind, path=str(path), **common))
