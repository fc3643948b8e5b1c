"""`rocket train`: train a student (MiniVLA, pi0, OFT-style) on LIBERO episodes, one of five variants.

Thin wiring from flags to :class:`rocket_vla.train.TrainConfig`; every check (dataset
layout, teacher, resume compatibility) happens in :class:`rocket_vla.train.Trainer`
before the first step. Multi-GPU: ``accelerate launch -m rocket_vla.cli train ...``.
"""

from __future__ import annotations

import argparse
import json

from rocket_vla.align.config import VARIANTS
from rocket_vla.errors import RocketError


def parse_layers(text: str | None) -> list[int] | None:
    """``"3,6,-1"`` -> ``[3, 6, -1]`` (the format `rocket select-layers` prints)."""
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RocketError(
            f"layer list {text!r} is not comma-separated integers; write e.g. 3,6,9."
        ) from None


def config_from_args(args: argparse.Namespace):
    from rocket_vla.data.augment import AugmentConfig
    from rocket_vla.train.config import TrainConfig

    return TrainConfig(
        dataset=args.dataset, out_dir=args.out, student=args.student,
        student_preset=args.student_preset, student_path=args.student_path,
        lora_rank=args.lora_rank, gradient_checkpointing=args.gradient_checkpointing,
        variant=args.variant.replace("-", "_"),
        student_layers=parse_layers(args.student_layers),
        teacher_layers=parse_layers(args.teacher_layers), num_pairs=args.pairs,
        align_weight=args.align_weight, projector_hidden=args.projector_hidden,
        teacher=args.teacher, teacher_cache=args.teacher_cache, teacher_size=args.teacher_size,
        steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        weight_decay=args.weight_decay, schedule=args.schedule, decay_after=args.decay_after,
        warmup=args.warmup, grad_clip=args.grad_clip, precision=args.precision, seed=args.seed,
        augment=AugmentConfig(enabled=not args.no_augment), max_episodes=args.max_episodes,
        save_every=args.save_every, keep_last=args.keep_last, log_every=args.log_every,
        progress=not args.no_progress, tensorboard=not args.no_tensorboard,
        log_samples=args.log_samples,
    )


def run(args: argparse.Namespace) -> int:
    from rocket_vla.train import Trainer

    cfg = config_from_args(args)
    resume = args.out if args.resume == "auto" else args.resume
    trainer = Trainer(cfg, resume=resume)
    result = trainer.fit()
    summary = {"step": result.step, "seconds": round(result.seconds, 2),
               "samples_per_s": round(result.samples_per_s, 2),
               "checkpoint": str(result.checkpoint) if result.checkpoint else None,
               "last": result.history[-1] if result.history else None}
    if trainer.accelerator.is_main_process:
        print(json.dumps(summary))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a student with ROCKET alignment (or a baseline) on LIBERO episodes",
        description="Train a student (--student) on LIBERO-layout HDF5 episodes. --variant picks "
        "one of the paper's five presets; --student-layers/--teacher-layers override the pairs "
        "(paste what `rocket select-layers` prints).",
    )
    p.add_argument("--dataset", required=True, help="episode HDF5 file or folder (LIBERO layout)")
    p.add_argument("--out", default="runs/train", help="run folder (checkpoints, tb, metrics)")
    p.add_argument("--student", default="minivla", help="student kind: minivla, pi0, oft")
    p.add_argument("--student-preset", "--model", dest="student_preset", default=None,
                   help="the student's size preset (MiniVLA: tiny, demo (default), small)")
    p.add_argument("--student-path", default=None,
                   help="local pretrained checkpoint folder of the student (nothing is downloaded)")
    p.add_argument("--lora-rank", type=int, default=0,
                   help="0: full fine-tuning; >0: LoRA on the language model's linear layers "
                   "(paper: 32)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute block activations in backward (saves GPU memory)")
    p.add_argument("--variant", default="rocket", choices=[*VARIANTS, "spatial-forcing"])
    p.add_argument("--student-layers", default=None, help="comma-separated, e.g. 2,4,6")
    p.add_argument("--teacher-layers", default=None, help="comma-separated, e.g. 1,2,4")
    p.add_argument("--pairs", type=int, default=4, help="pairs for the balanced selection")
    p.add_argument("--align-weight", type=float, default=None,
                   help="lambda (default: the student's; paper 0.5, pi0 0.125)")
    p.add_argument("--projector-hidden", type=int, default=64,
                   help="projector hidden width H (paper: half the student width)")
    p.add_argument("--teacher", default="tiny",
                   help="'tiny' (bundled), 'random-tiny', or a VGGT checkpoint path")
    p.add_argument("--teacher-cache", default=None,
                   help="read teacher features from a `rocket cache-teacher` folder instead")
    p.add_argument("--teacher-size", type=int, default=56, help="teacher input side (px)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", choices=("step", "cosine", "constant"), default="step",
                   help="step: x0.1 after --decay-after steps (the paper); cosine")
    p.add_argument("--decay-after", type=int, default=10_000)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--precision", choices=("auto", "no", "bf16", "fp16"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true", help="no random crop / colour jitter")
    p.add_argument("--max-episodes", type=int, default=None)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--keep-last", type=int, default=2)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--log-samples", action="store_true",
                   help="each process writes its dataset indices per step to OUT/samples/")
    p.add_argument("--resume", default=None,
                   help="checkpoint or run folder to continue from ('auto' = --out)")
    p.set_defaults(func=run)
