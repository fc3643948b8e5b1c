"""Teacher-cache entry forms: bytes per sample at VGGT-1B shapes, and the error each form adds.

Why: a full-grid float16 cache of VGGT-1B at 518 px is over 100 MiB per sample; a user with
8 GPUs needs something smaller, and must know what it costs in accuracy. For every
:class:`~rocket_vla.teachers.cache_forms.StoredForm` (teacher or student grid x float16,
bfloat16, float8 with per-token scales) this prints

* bytes per sample at VGGT-1B shapes, from the real config's patch grid and width (the
  network is built on the meta device, so nothing is allocated), checked against the file
  the project's cache writer produces for the current form;
* the error against full-precision full-grid targets (float64 resampling of float32
  features): per-token cosine distance and relative error of the resampled targets, and the
  relative change of the alignment loss and of its gradient (ROCKET preset, a fixed random
  projector and random student states), on features of the bundled trained tiny teacher
  (real teacher statistics, small shapes) for LIBERO frames from ``--episodes`` (or smooth
  synthetic frames when no file is given).

Usage::

    python benchmarks/teacher_cache_forms.py --episodes path/to/libero_hdf5_dir --samples 8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rocket_vla.align import AlignConfig, Aligner, resample_teacher
from rocket_vla.teachers.cache import FeatureCache, spec_for
from rocket_vla.teachers.cache_forms import StoredForm, encode, entry_bytes, targets_from_entry
from rocket_vla.teachers.tiny import load_tiny_teacher
from rocket_vla.teachers.vggt import VGGTConfig, VGGTTeacher

FORMS = [StoredForm(g, d) for g in ("teacher", "student") for d in ("float16", "bfloat16", "float8_e4m3fn")]
PI0_TEACHER_LAYERS = 10  # AlignConfig.preset("rocket", layout="pi0") aligns 10 teacher layers


def sizes(args: argparse.Namespace) -> list[dict]:
    """Bytes per sample at VGGT-1B shapes for every form and input size."""
    teacher = VGGTTeacher(VGGTConfig(), materialise=False)  # meta device: shapes only
    student_grid = (args.student_px // 14, args.student_px // 14)
    rows = []
    for px in (518, 224):
        grid = teacher.patch_grid(px, px)
        for layers in (PI0_TEACHER_LAYERS, 5):
            for form in FORMS:
                n = entry_bytes(form, layers=layers, views=args.views, teacher_grid=grid,
                                student_grid=student_grid, dim=teacher.dim)
                rows.append({"teacher_px": px, "teacher_grid": list(grid), "layers": layers,
                             "form": form.label, "bytes": n, "MiB": round(n / 2**20, 2),
                             "GB_per_10k_samples": round(n * 1e4 / 1e9, 1)})
    return rows


def written_entry_bytes(args: argparse.Namespace) -> dict:
    """The current cache writer's file for one sample at VGGT-1B 518 px (zeros), measured."""
    teacher = VGGTTeacher(VGGTConfig(), materialise=False)
    teacher._weights_hash = "meta"  # fingerprint without hashing unmaterialised weights
    layers = [3, 5, 7, 9, 11, 13, 15, 17, 19, 24]
    cameras = [f"cam{i}" for i in range(args.views)]
    spec = spec_for(teacher, layers, cameras, "size-check", (518, 518))
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache.create(tmp, spec)
        grid = spec.grid
        feats = [torch.zeros(1, args.views, *grid, teacher.dim) for _ in layers]
        path = cache.write("sample", feats, [0])
        size = path.stat().st_size
    payload = entry_bytes(StoredForm(), layers=len(layers), views=args.views, teacher_grid=grid,
                          student_grid=(16, 16), dim=teacher.dim)
    return {"file_bytes": size, "computed_payload_bytes": payload, "header_bytes": size - payload}


def frames(args: argparse.Namespace) -> torch.Tensor:
    """[N, 2, 3, H, W] in [0, 1]: LIBERO frames from a file, else smooth synthetic scenes."""
    if args.episodes:
        from rocket_vla.data.dataset import CAMERAS
        from rocket_vla.data.episodes import read_episodes

        eps = read_episodes(args.episodes)
        picks = []
        rng = np.random.default_rng(0)
        while len(picks) < args.samples:
            ep = eps[int(rng.integers(len(eps)))]
            row = int(rng.integers(len(ep.frame_index)))
            picks.append(np.stack([ep.obs[c][row] for c in CAMERAS]))
        return torch.from_numpy(np.stack(picks)).permute(0, 1, 4, 2, 3).float() / 255
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(args.samples * 2, 3, 6, 6, generator=g)
    smooth = F.interpolate(coarse, size=(128, 128), mode="bicubic", align_corners=False).clamp(0, 1)
    return smooth.reshape(args.samples, 2, 3, 128, 128)


def errors(args: argparse.Namespace) -> dict:
    teacher = load_tiny_teacher(input_size=args.teacher_px)
    layers = list(range(1, teacher.num_layers + 1))
    views = frames(args)
    with torch.no_grad():
        feats = torch.stack(teacher.features(views, layers))  # [L, B, S, h, w, C] float32
    grid = tuple(feats.shape[3:5])
    sgrid = (args.student_grid, args.student_grid)
    cfg = AlignConfig.preset("rocket", student_dim=args.student_dim, teacher_dim=teacher.dim,
                             hidden_dim=args.hidden, student_layers=layers, teacher_layers=layers)
    torch.manual_seed(0)
    aligner = Aligner(cfg).double()
    g = torch.Generator().manual_seed(1)
    b, s = feats.shape[1:3]
    states = [torch.randn(b, s * sgrid[0] * sgrid[1], args.student_dim, generator=g, dtype=torch.float64)
              for _ in layers]
    reference = [resample_teacher(f.double(), sgrid, pos_embed_scale=cfg.pos_embed_scale,
                                  pos_embed=cfg.pos_embed) for f in feats]

    def loss_and_grad(targets: list[torch.Tensor]) -> tuple[float, torch.Tensor]:
        aligner.zero_grad(set_to_none=True)
        out = aligner(states, [t.double() for t in targets])
        out.loss.backward()
        grad = torch.cat([p.grad.reshape(-1) for p in aligner.parameters() if p.grad is not None])
        return float(out.loss.detach()), grad

    ref_loss, ref_grad = loss_and_grad(reference)
    rows = []
    for form in FORMS:
        stored = encode(feats, form, student_grid=sgrid)
        got = targets_from_entry(stored, form, teacher_grid=grid, student_grid=sgrid,
                                 pos_embed_scale=cfg.pos_embed_scale, dtype=torch.float32,
                                 pos_embed=cfg.pos_embed)
        cos = torch.cat([(1 - F.cosine_similarity(a.double(), r, dim=-1)).reshape(-1)
                         for a, r in zip(got, reference, strict=True)])
        rel = torch.cat([((a.double() - r).norm(dim=-1) / r.norm(dim=-1)).reshape(-1)
                         for a, r in zip(got, reference, strict=True)])
        loss, grad = loss_and_grad(got)
        rows.append({
            "form": form.label,
            "target_cosine_distance_mean": float(cos.mean()), "target_cosine_distance_max": float(cos.max()),
            "target_rel_error_mean": float(rel.mean()), "target_rel_error_max": float(rel.max()),
            "loss_rel_change": abs(loss - ref_loss) / ref_loss,
            "grad_rel_error": float((grad - ref_grad).norm() / ref_grad.norm()),
        })
    return {"teacher": f"bundled tiny teacher at {args.teacher_px} px (grid {list(grid)}, dim {teacher.dim}, "
                       f"{len(layers)} layers)", "student_grid": list(sgrid), "samples": int(b),
            "frames": args.episodes or "synthetic smooth frames", "reference_loss": ref_loss, "forms": rows}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--episodes", default=None, help="LIBERO hdf5 file or folder for real frames")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--views", type=int, default=2)
    p.add_argument("--student-px", type=int, default=224, help="pi0's image size (16 x 16 tokens)")
    p.add_argument("--teacher-px", type=int, default=224, help="tiny teacher input for the error part")
    p.add_argument("--student-grid", type=int, default=8)
    p.add_argument("--student-dim", type=int, default=64)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    result = {"command": " ".join(["python", *sys.argv]), "sizes_vggt_1b": sizes(args),
              "written_entry_vggt_1b_518px": written_entry_bytes(args), "errors": errors(args)}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
