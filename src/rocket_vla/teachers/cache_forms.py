"""Smaller teacher-cache entries: at the student's grid, in fewer bits, for fewer layers.

A cache entry today is the teacher's full patch grid, float16, per camera and layer --
``L x S x h x w x C x 2`` bytes per sample, which for VGGT-1B at 518 px (37 x 37 x 2048,
10 layers, 2 views) is over 100 MiB. On 8 GPUs a step of batch 8 per GPU would read
several GB of features, so what is stored matters. A :class:`StoredForm` names the choices:

* ``grid="student"``: the features already resampled to the student's token grid. Only
  valid when the student trains without random crops (a crop box needs the full grid).
  Resampling is linear, so the position embedding that ROCKET adds *before* resampling can
  be added *after* it as the teacher-grid embedding resampled once
  (:func:`~rocket_vla.align.resample.resampled_pos_embed`); the stored numbers therefore
  hold no embedding and do not depend on its scale.
* ``dtype``: ``float16`` (today's), ``bfloat16``, or ``float8_e4m3fn`` with one float16
  scale per token vector (its absolute maximum over channels / 448, the format's largest
  finite value), which keeps tokens of very different norms on the same relative grid.
* ``layers``: store only the teacher layers a run aligns to (a prefix of the list is what
  the ``layers`` argument of the size function counts).

``encode``/``decode`` turn float features into stored tensors and back; the benchmark
``benchmarks/teacher_cache_forms.py`` measures the error each form introduces against
full-precision full-grid targets and the bytes per sample at VGGT-1B shapes. The cache
directory format (:mod:`rocket_vla.teachers.cache`) stores the teacher-grid float16 form.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rocket_vla.align.resample import resample_layers, resampled_pos_embed
from rocket_vla.errors import RocketError

DTYPES = ("float16", "bfloat16", "float8_e4m3fn")
FP8_MAX = 448.0  # largest finite float8_e4m3fn
SCALE_DTYPE = torch.float16


@dataclass(frozen=True)
class StoredForm:
    """How a cache entry is stored: ``grid`` "teacher" or "student", ``dtype`` one of DTYPES."""

    grid: str = "teacher"
    dtype: str = "float16"

    def __post_init__(self) -> None:
        if self.grid not in ("teacher", "student"):
            raise RocketError(f"stored grid {self.grid!r} is unknown; use 'teacher' or 'student'.")
        if self.dtype not in DTYPES:
            raise RocketError(f"stored dtype {self.dtype!r} is unknown; use one of {DTYPES}.")

    @property
    def scaled(self) -> bool:
        return self.dtype == "float8_e4m3fn"

    @property
    def label(self) -> str:
        return f"{self.grid} grid, {self.dtype}" + (" + per-token scale" if self.scaled else "")


def entry_bytes(form: StoredForm, *, layers: int, views: int, teacher_grid: tuple[int, int],
                student_grid: tuple[int, int], dim: int) -> int:
    """Payload bytes of one sample's entry (all layers and views) in ``form``."""
    rows, cols = teacher_grid if form.grid == "teacher" else student_grid
    tokens = layers * views * rows * cols
    value_bytes = torch.empty((), dtype=getattr(torch, form.dtype)).element_size()
    scale_bytes = torch.empty((), dtype=SCALE_DTYPE).element_size() if form.scaled else 0
    return tokens * (dim * value_bytes + scale_bytes)


def encode(features: torch.Tensor, form: StoredForm,
           student_grid: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Stored tensors for float features ``[L, B, S, h, w, C]``.

    ``values`` is ``[L, B, S, rows, cols, C]`` at the stored grid and dtype; ``scale``
    (float8 only) is ``[L, B, S, rows, cols, 1]``. Resampling to the student grid runs in
    float32 (no position embedding, see the module docstring).
    """
    if features.dim() != 6:
        raise RocketError(
            f"features to store must be [L, B, S, h, w, C], got {tuple(features.shape)}; stack the layers."
        )
    x = features.float()
    if form.grid == "student":
        if student_grid is None:
            raise RocketError("storing at the student grid needs student_grid=(rows, cols).")
        layers, b, s, _, _, c = x.shape
        out = resample_layers(x, student_grid)
        x = torch.stack(out).reshape(layers, b, s, *student_grid, c)
    if not form.scaled:
        return {"values": x.to(getattr(torch, form.dtype))}
    scale = (x.abs().amax(dim=-1, keepdim=True) / FP8_MAX).clamp_min(torch.finfo(SCALE_DTYPE).tiny)
    scale = scale.to(SCALE_DTYPE)
    values = (x / scale.float()).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return {"values": values, "scale": scale}


def decode(stored: dict[str, torch.Tensor], form: StoredForm, dtype: torch.dtype = torch.float32
           ) -> torch.Tensor:
    """The stored features back as ``[L, B, S, rows, cols, C]`` at ``dtype``."""
    values = stored["values"]
    if form.scaled:
        return (values.to(torch.float32) * stored["scale"].to(torch.float32)).to(dtype)
    return values.to(dtype)


def targets_from_entry(stored: dict[str, torch.Tensor], form: StoredForm, *,
                       teacher_grid: tuple[int, int], student_grid: tuple[int, int],
                       pos_embed_scale: float, dtype: torch.dtype = torch.float32,
                       pos_embed: str = "sincos") -> list[torch.Tensor]:
    """Alignment targets ``[B, S * gh * gw, C]`` per layer from a stored entry (no crop).

    Teacher-grid entries go through the aligner's resampling; student-grid entries get the
    teacher-grid position embedding, resampled once and cached, added at the student grid.
    """
    feats = decode(stored, form, dtype)
    if form.grid == "teacher":
        return resample_layers(feats, student_grid, pos_embed_scale=pos_embed_scale, pos_embed=pos_embed)
    layers, b, s, gh, gw, c = feats.shape
    if (gh, gw) != tuple(student_grid):
        raise RocketError(
            f"the entry is stored at grid {(gh, gw)} but the student grid is {tuple(student_grid)}; "
            "rebuild the cache for this student."
        )
    if pos_embed_scale:
        pos = resampled_pos_embed(c, *teacher_grid, tuple(student_grid), feats.device, dtype, pos_embed)
        feats = feats + pos_embed_scale * pos
    return list(feats.reshape(layers, b, s * gh * gw, c).unbind(0))

