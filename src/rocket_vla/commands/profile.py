"""`rocket profile cka|grad|projector|importance`: the paper's four analyses on a checkpoint.

Thin wiring: parse flags, load the checkpoint(s) as profile subjects, call
:mod:`rocket_vla.analysis.profiles`, print where the JSON/PNG went (and, for CKA, the
recommended pairs as flags and YAML for `rocket train`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rocket_vla.config_cli import format_pairs
from rocket_vla.errors import RocketError


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers (e.g. 2,4,-1)"
        ) from None


def _subjects(args: argparse.Namespace) -> list:
    from rocket_vla.analysis.subject import StudentSubject, checkpoint_steps

    paths = list(args.checkpoint)
    if getattr(args, "all_steps", False):
        paths = [step for p in paths for step in checkpoint_steps(p)]
    return [
        StudentSubject.load(c, dataset=args.dataset, teacher=args.teacher,
                            teacher_size=args.teacher_size, seed=args.seed)
        for c in paths
    ]


def run_cka(args: argparse.Namespace) -> int:
    from rocket_vla.analysis.profiles import CKASettings, profile_cka

    if len(args.checkpoint) != 1:
        raise RocketError("`profile cka` maps one checkpoint; pass a single --checkpoint.")
    settings = CKASettings(args.student_layers, args.teacher_layers, args.samples,
                           args.batch_size, args.mode, args.estimator, args.pairs,
                           progress=not args.quiet)
    data = profile_cka(_subjects(args)[0], settings, Path(args.out))
    print(f"# CKA map ({data['estimator']}, {data['num_samples']} samples, "
          f"{data['num_batches']} batches) -> {args.out}/cka.json, {args.out}/cka.png")
    for method, pairs in data["pairs"].items():
        print(f"# {method} pairing (index k = stream after block k)")
        print(format_pairs(pairs["student_layers"], pairs["teacher_layers"], "flags"))
        print(format_pairs(pairs["student_layers"], pairs["teacher_layers"], "yaml"))
    return 0


def run_grad(args: argparse.Namespace) -> int:
    from rocket_vla.analysis.grad_conflict import ParamGroup
    from rocket_vla.analysis.profiles import GradSettings, profile_grad

    group = ParamGroup(args.params, "", args.block, args.name_filter)
    data = profile_grad(_subjects(args), GradSettings(group, args.batches, args.batch_size),
                        Path(args.out))
    for r in data["checkpoints"]:
        print(f"{r['label']}: mean inter-pair gradient cosine {r['mean_inter_pair_cosine']:+.3f} "
              f"over {r['num_params']} parameters, {r['num_batches']} batches")
    print(f"# -> {args.out}/grad.json, {args.out}/grad.png")
    return 0


def run_projector(args: argparse.Namespace) -> int:
    from rocket_vla.analysis.profiles import profile_projector

    data = profile_projector(_subjects(args), args.samples, args.batch_size, Path(args.out))
    for r in data["checkpoints"]:
        fit = ", ".join(f"{v:.3f}" for v in r["fit"])
        print(f"{r['label']}: cos(projected, teacher) per pair [{fit}]")
    print(f"# -> {args.out}/projector.json, {args.out}/projector_*.png")
    return 0


def run_importance(args: argparse.Namespace) -> int:
    from rocket_vla.analysis.profiles import profile_importance

    if len(args.checkpoint) != 1:
        raise RocketError("`profile importance` reads one checkpoint; pass a single --checkpoint.")
    profile_importance(_subjects(args)[0], args.windows, args.samples, args.batch_size,
                       Path(args.out))
    print(f"# -> {args.out}/importance.json, {args.out}/importance.png")
    return 0


def _common(p: argparse.ArgumentParser, out: str, samples: int, batch: int) -> None:
    p.add_argument("--checkpoint", nargs="+", required=True,
                   help="run folder(s) or step_* checkpoint folder(s) written by `rocket train`")
    p.add_argument("--dataset", default=None,
                   help="LIBERO-layout HDF5 file or folder (default: the run's dataset)")
    p.add_argument("--teacher", default=None,
                   help="teacher spec as for `rocket train` (default: the run's teacher)")
    p.add_argument("--teacher-size", type=int, default=None,
                   help="teacher input side in pixels (default: the run's)")
    p.add_argument("--samples", type=int, default=samples, help="number of samples")
    p.add_argument("--batch-size", type=int, default=batch)
    p.add_argument("--seed", type=int, default=0, help="seed of the sample subset")
    p.add_argument("--out", default=out, help="output folder for JSON and PNG")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile", help="diagnostics: CKA layer map, gradient conflict, projector, importance",
        description="The paper's analyses on student checkpoints; each writes JSON and a PNG.",
    )
    kinds = p.add_subparsers(dest="profile", metavar="KIND", required=True)

    cka = kinds.add_parser("cka", help="linear CKA student x teacher layers + recommended pairs")
    _common(cka, "runs/profile/cka", 512, 32)
    cka.add_argument("--student-layers", type=_int_list, default=None,
                     help="student indices to map (default: every block output)")
    cka.add_argument("--teacher-layers", type=_int_list, default=None,
                     help="teacher indices to map (default: every block output)")
    cka.add_argument("--estimator", choices=("debiased", "biased"), default="debiased")
    cka.add_argument("--mode", choices=("flatten", "mean"), default="flatten",
                     help="per-sample feature: flattened token map (default) or mean token")
    cka.add_argument("--pairs", type=int, default=None,
                     help="number of pairs to recommend (default: as many as possible)")
    cka.add_argument("--quiet", action="store_true", help="no progress bar")
    cka.set_defaults(func=run_cka)

    grad = kinds.add_parser("grad", help="cosines between per-pair and action-loss gradients")
    _common(grad, "runs/profile/grad", 64, 16)
    grad.add_argument("--batches", type=int, default=4, help="batches to average over")
    grad.add_argument("--all-steps", action="store_true",
                      help="profile every saved step_* checkpoint of each run (curves over training)")
    grad.add_argument("--params", choices=("all", "block", "lora"), default="all",
                      help="parameter group: all backbone blocks, one block, or LoRA weights")
    grad.add_argument("--block", type=int, default=None, help="block position for --params block")
    grad.add_argument("--name-filter", default=None,
                      help="regular expression on parameter names (LoRA default: lora_)")
    grad.set_defaults(func=run_grad)

    proj = kinds.add_parser("projector", help="projector fit and between-pair similarities")
    _common(proj, "runs/profile/projector", 256, 32)
    proj.add_argument("--all-steps", action="store_true",
                      help="profile every saved step_* checkpoint of each run")
    proj.set_defaults(func=run_projector)

    imp = kinds.add_parser("importance", help="mean cos(h_s, h_s+w) per layer")
    _common(imp, "runs/profile/importance", 256, 32)
    imp.add_argument("--windows", type=_int_list, default=[1, 2, 4],
                     help="block windows w (default 1,2,4)")
    imp.set_defaults(func=run_importance)
