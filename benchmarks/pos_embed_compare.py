"""How far apart are the two position embeddings ``AlignConfig.pos_embed`` offers?

``"sincos"`` (ours: MAE-style, integer patch positions, base 10000, row first) and
``"vggt-uv"`` (VGGT's own, which the official ROCKET / Spatial Forcing code adds to the
teacher grid: diagonal-normalised patch centres, base 100, x first). Both have the same
norm per token (``sqrt(C / 2)``: one sin/cos pair per frequency), so any difference is in
direction. Per shape this prints, for the embedding at the teacher grid and after the
full-frame resampling to the student grid (what the targets receive):

* ``rel``: ``||sincos - uv|| / ||uv||`` over the whole grid, and ``cos``: the mean per-token
  cosine between the two (same norms, so ``rel = sqrt(2 - 2 cos)`` exactly when every token
  has the same cosine);
* ``spread``: per embedding, the mean cosine between the embeddings of two *different*
  student tokens (1 = the same vector everywhere, a constant offset carrying no position)
  and between horizontal neighbours, and ``varying``: the norm of the embedding minus its
  mean over the tokens, relative to its norm -- the part that actually tells tokens apart;
* ``resample err``: ``||resample(E_teacher) - E(student positions)|| / ||E||`` -- how much
  the bilinear resampling bends the embedding away from the same formula evaluated at the
  positions the student tokens sample (high frequencies alias; smooth ones survive).

Run: ``python benchmarks/pos_embed_compare.py`` (CPU, a second). Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from rocket_vla.align.resample import POS_EMBEDS, pos_embed_2d

#: (label, channels, teacher grid, student grid)
SHAPES = [
    ("VGGT-1B 518 px -> OpenVLA / pi0 16x16", 2048, (37, 37), (16, 16)),
    ("tiny teacher 112 px -> MiniVLA demo 4x4", 192, (8, 8), (4, 4)),
    ("tiny teacher 56 px -> MiniVLA demo 4x4", 192, (4, 4), (4, 4)),
]


def channels_last(emb: torch.Tensor) -> torch.Tensor:
    """``[C, h, w]`` -> ``[h * w, C]`` in float64."""
    return emb.double().flatten(1).T


def resample(emb: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Full-frame bilinear resampling with ``align_corners=True``, as the targets get it."""
    if tuple(emb.shape[1:]) == tuple(grid):
        return emb.double()
    return F.interpolate(emb.double()[None], size=grid, mode="bilinear", align_corners=True)[0]


def sincos_at(positions: torch.Tensor, quarter: int, base: float) -> torch.Tensor:
    """``[n, 2q]``: sines then cosines of ``positions`` at frequencies ``base ** (-k / q)``."""
    angles = positions[:, None] * base ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def evaluated_at_student(kind: str, dim: int, teacher: tuple[int, int],
                         student: tuple[int, int]) -> torch.Tensor:
    """The embedding's formula evaluated at the (fractional) teacher positions the student
    tokens sample, ``[C, gh, gw]``: the ideal that resampling approximates. Written out here
    from the definitions (docs/position_embedding.md), not with the library's helpers."""
    (h, w), (gh, gw) = teacher, student
    rows = torch.linspace(0, h - 1, gh, dtype=torch.float64)  # align_corners=True sample points
    cols = torch.linspace(0, w - 1, gw, dtype=torch.float64)
    quarter = dim // 4
    if kind == "sincos":  # integer-position units
        row_emb, col_emb = sincos_at(rows, quarter, 10000.0), sincos_at(cols, quarter, 10000.0)
    else:  # patch centres normalised by the frame's diagonal
        diagonal = math.hypot(w, h)
        u = (cols + 0.5 - w / 2) * 2 / diagonal
        v = (rows + 0.5 - h / 2) * 2 / diagonal
        row_emb, col_emb = sincos_at(v, quarter, 100.0), sincos_at(u, quarter, 100.0)
    row_part = row_emb[:, None, :].expand(len(rows), len(cols), -1)
    col_part = col_emb[None, :, :].expand(len(rows), len(cols), -1)
    parts = [row_part, col_part] if kind == "sincos" else [col_part, row_part]  # vggt-uv: x first
    return torch.cat(parts, dim=-1).permute(2, 0, 1)


def spread(tokens: torch.Tensor, grid: tuple[int, int]) -> tuple[float, float, float]:
    """(mean cosine between distinct tokens, mean cosine between horizontal neighbours,
    relative norm of the part that varies over the tokens)."""
    unit = F.normalize(tokens, dim=-1)
    gram = unit @ unit.T
    n = gram.shape[0]
    distinct = float((gram.sum() - gram.diagonal().sum()) / max(n * (n - 1), 1))
    maps = unit.reshape(*grid, -1)
    neighbour = float((maps[:, 1:] * maps[:, :-1]).sum(-1).mean()) if grid[1] > 1 else math.nan
    varying = float((tokens - tokens.mean(0)).norm() / tokens.norm())
    return distinct, neighbour, varying


def compare(dim: int, teacher: tuple[int, int], student: tuple[int, int]) -> dict[str, float]:
    out: dict[str, float] = {}
    tables = {k: pos_embed_2d(k, dim, *teacher) for k in POS_EMBEDS}
    for where, grid in (("teacher", teacher), ("student", student)):
        a, b = (channels_last(resample(tables[k], grid)) for k in POS_EMBEDS)
        out[f"{where} rel"] = float((a - b).norm() / b.norm())
        out[f"{where} cos"] = float(F.cosine_similarity(a, b, dim=-1).mean())
    for kind in POS_EMBEDS:
        resampled = resample(tables[kind], student)
        ideal = evaluated_at_student(kind, dim, teacher, student)
        out[f"{kind} resample err"] = float((resampled - ideal).norm() / ideal.norm())
        spreads = spread(channels_last(resampled), student)
        out[f"{kind} distinct cos"], out[f"{kind} neighbour cos"], out[f"{kind} varying"] = spreads
    return out


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print(f"torch {torch.__version__}; float64 on the CPU; norms per token: sqrt(C/2) for both")
    for label, dim, teacher, student in SHAPES:
        r = compare(dim, teacher, student)
        print(f"\n{label}: C={dim}, teacher {teacher[0]}x{teacher[1]} -> student {student[0]}x{student[1]}")
        print(f"  sincos vs vggt-uv at the teacher grid: rel {r['teacher rel']:.4f}, "
              f"per-token cos {r['teacher cos']:.4f}")
        print(f"  sincos vs vggt-uv at the student grid: rel {r['student rel']:.4f}, "
              f"per-token cos {r['student cos']:.4f}")
        for kind in POS_EMBEDS:
            print(f"  {kind:8s} at the student grid: distinct-token cos {r[f'{kind} distinct cos']:.4f}, "
                  f"neighbour cos {r[f'{kind} neighbour cos']:.4f}, varying {r[f'{kind} varying']:.4f}, "
                  f"resample err {r[f'{kind} resample err']:.4f}")


if __name__ == "__main__":
    main()
