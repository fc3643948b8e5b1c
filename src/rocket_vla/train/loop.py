"""The training loop: any :class:`Student` + ROCKET alignment, readable top to bottom.

One code path runs all five variants: the baseline is the same loop with an aligner that
has no projector, and it never builds or calls a teacher. A step is::

    batch -> augment (seeded by step) -> student.prepare -> student.action_loss with
          LayerTaps on its blocks (over student.visual_index) -> teacher features (live or
          cached) resampled into the crop boxes
          -> loss = action loss + weight * L_align -> backward (accumulated) -> clip -> AdamW

The loop knows students only through the :class:`~rocket_vla.policies.student.Student`
interface (built by ``build_student`` from ``cfg.student``, ``student_preset``, ``student_path``
and ``student_config``);
``lora_rank > 0`` injects PEFT adapters in place and freezes the base.

Every source of randomness after initialisation is a function of (seed, step): the batch
order is a per-epoch permutation indexed by the global sample position, and augmentation
draws from a generator seeded with (seed, step). So ``--resume`` only has to restore the
weights, the optimizer/scheduler state and the step to continue *exactly*.

Multi-GPU goes through HF Accelerate unchanged (``accelerate launch -m rocket_vla.cli
train ...``): each rank takes its slice of the same global batch.

The run folder is locked (:mod:`rocket_vla.train.run_lock`) from construction to the end of
``fit``, so a second run into it is refused. A checkpoint is written only once its weights
are known to be good: the checkpoint of step N is written during step N+1, after the loss
at those weights came out finite and before the optimizer changes them (the last one after
a forward pass on the next batch), so a learning rate that blows the weights up never
leaves a checkpoint of them to resume or evaluate.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import default_collate

from rocket_vla.align import AlignConfig, Aligner, AlignOutput, LayerTaps, balanced_select
from rocket_vla.align.config import PAPER_PAIRS
from rocket_vla.data.augment import augment_views
from rocket_vla.data.dataset import ChunkDataset, fit_stats, images_to_float
from rocket_vla.data.normalize import DatasetStats
from rocket_vla.errors import RocketError
from rocket_vla.fingerprint import check_same_code, code_version
from rocket_vla.optim import build_optimizer, build_scheduler
from rocket_vla.policies.student import (
    CHECKPOINT_FORMAT,
    Student,
    apply_lora,
    build_student,
    lora_settings,
    student_spec,
)
from rocket_vla.train import checkpoint as ckpt_io
from rocket_vla.train.config import TrainConfig
from rocket_vla.train.run_lock import RunLease
from rocket_vla.train.teacher_source import LiveTeacher, TeacherSource


# ----------------------------------------------------------------------------- model
class RocketModel(nn.Module):
    """The trainable whole: the student policy, its layer taps and the aligner's projectors.

    Kept as one module, with the alignment loss computed inside ``forward``, so that
    Accelerate/DDP wraps (and checkpoints) policy and projectors together.
    """

    def __init__(self, policy: Student, aligner: Aligner) -> None:
        super().__init__()
        self.policy = policy
        self.aligner = aligner
        self.taps: LayerTaps | None = None
        if aligner.enabled:
            self.taps = LayerTaps(policy, policy.blocks_path, aligner.config.student_layers,
                                  final=policy.final_path)
            self.taps.attach()

    def forward(
        self, inputs: dict[str, Any], targets: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, AlignOutput | None]:
        """The student's action loss on prepared ``inputs``, and the alignment output when
        ``targets`` are given."""
        if self.taps is not None:
            self.taps.use_tokens(self.policy.visual_index(inputs))
        loss = self.policy.action_loss(inputs)
        if self.taps is None:
            return loss, None
        if targets is None:  # no teacher: drop the captured states instead of holding them
            self.taps.clear()
            return loss, None
        states = [s.float() for s in self.taps.states]
        self.taps.clear()
        return loss, self.aligner(states, targets)


def build_align_config(cfg: TrainConfig, policy: Student, teacher: TeacherSource | None
                       ) -> AlignConfig:
    """The variant's preset for this student (and teacher, unless it is the baseline)."""
    overrides = {} if cfg.pos_embed is None else {"pos_embed": cfg.pos_embed}
    if cfg.variant == "baseline":
        return AlignConfig.preset("baseline", student_dim=policy.width,
                                  student_depth=policy.depth, **overrides)
    assert teacher is not None
    pairs = min(cfg.num_pairs, policy.depth, teacher.num_layers)
    student_layers, teacher_layers = cfg.student_layers, cfg.teacher_layers
    cached = getattr(teacher, "layers", None)
    if teacher_layers is None and cached is not None and cfg.variant != "spatial_forcing":
        # A cache holds only some layers: pair a balanced subset of them with the student.
        pairs = min(pairs, len(cached))
        teacher_layers = [cached[i] for i in balanced_select(len(cached), pairs)]
        student_layers = [i + 1 for i in balanced_select(policy.depth, pairs)]
    return AlignConfig.preset(
        cfg.variant, student_dim=policy.width, teacher_dim=teacher.dim,
        student_depth=policy.depth, teacher_depth=teacher.num_layers,
        student_layers=student_layers, teacher_layers=teacher_layers, num_pairs=pairs,
        layout=paper_layout(policy, teacher.num_layers, cached is not None),
        hidden_dim=cfg.projector_hidden, weight=align_weight(cfg, policy), **overrides,
    ).resolved()


def align_weight(cfg: TrainConfig, policy: Student) -> float:
    """``cfg.align_weight``, else the student's own default (the paper: 0.5; pi0: 0.125)."""
    return float(cfg.align_weight if cfg.align_weight is not None else policy.align_weight)


def paper_layout(policy: Student, teacher_depth: int, cached: bool) -> str | None:
    """The student's paper layout (its published layer pairs) when the teacher is deep enough
    for them (VGGT's 24 blocks) and every layer is at hand; else None: balanced pairs."""
    layout = policy.align_layout
    if layout is None or cached:
        return None
    students, teachers = PAPER_PAIRS[layout]
    if max(teachers) > teacher_depth or max(students) > policy.depth:
        return None
    return layout


# ----------------------------------------------------------------------------- data order
def sample_order(n: int, seed: int, start: int, count: int) -> np.ndarray:
    """Samples ``start .. start+count`` of the endless stream of per-epoch permutations."""
    out = np.empty(count, dtype=np.int64)
    filled = 0
    while filled < count:
        epoch, offset = divmod(start + filled, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        take = min(count - filled, n - offset)
        out[filled : filled + take] = perm[offset : offset + take]
        filled += take
    return out


def step_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(np.random.default_rng([seed, step, micro, rank, 7]).integers(2**62)))
    return g


# ----------------------------------------------------------------------------- results
@dataclass
class TrainResult:
    step: int
    checkpoint: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    samples_per_s: float = 0.0
    seconds: float = 0.0


def resolve_precision(setting: str) -> str:
    """``auto``: bf16 on a CUDA device that supports it, else full precision (CPU)."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def make_accelerator(precision: str, handlers: list[Any]) -> Any:
    """An ``Accelerator``; in a single, unlaunched process a second trainer may ask for another
    precision than the first (Accelerate keeps one process-wide state and refuses the change),
    so that state is reset there. Launched runs (several processes) keep theirs untouched."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    try:
        return Accelerator(mixed_precision=precision, kwargs_handlers=handlers)
    except ValueError as err:
        if "already been initialized" not in str(err) or PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(mixed_precision=precision, kwargs_handlers=handlers)


def load_episodes(path: str) -> list[Any]:
    """Episodes of a LIBERO-layout HDF5 file (or folder of them), checked before any work."""
    if not path:
        raise RocketError("no dataset given; pass --dataset PATH to a LIBERO-layout HDF5 file.")
    if not Path(path).exists():
        raise RocketError(f"dataset {path} does not exist; collect one with `rocket collect`.")
    try:
        from rocket_vla.data.episodes import read_episodes
    except ImportError as err:  # pragma: no cover - the data package ships with rocket-vla
        raise RocketError(f"cannot read episodes ({err}); install rocket-vla[io].") from err
    return list(read_episodes(path))


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """Builds everything from a :class:`TrainConfig`, validating inputs before any work.

    ``episodes`` (in-memory episodes) replaces ``cfg.dataset``; ``teacher`` replaces the
    teacher named by ``cfg.teacher`` (a ``Teacher`` or a :class:`TeacherSource`). Neither
    is touched for the baseline.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        episodes: Sequence[Any] | None = None,
        teacher: Any = None,
        resume: str | Path | None = None,
    ) -> None:
        from accelerate.utils import DistributedDataParallelKwargs

        cfg.validate()
        self.cfg = cfg
        # Students need not use every parameter in every step (pi0's expert reads only the
        # keys/values of the VLM's last block; the baseline taps nothing), so DDP must look
        # for unused parameters instead of waiting for their gradients forever.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
        self.accelerator = make_accelerator(resolve_precision(cfg.precision), [ddp])
        # Held before anything in the folder is read or deleted (--overwrite), to the end of
        # fit; a trainer dropped without fit lets go when it is collected, or on close().
        self._lease = RunLease(cfg.out_dir)
        if self.accelerator.is_main_process:
            self._lease.acquire()
            weakref.finalize(self, self._lease.release)
        try:
            self._build(cfg, episodes, teacher, resume)
        except BaseException:
            self._lease.release()
            raise

    def _build(self, cfg: TrainConfig, episodes: Sequence[Any] | None, teacher: Any,
               resume: str | Path | None) -> None:
        resume_ckpt, saved = self._check_resume(resume)
        if resume is None:  # refuse early (cheap); clearing with --overwrite waits, see below
            ckpt_io.prepare_fresh_run(cfg.out_dir, cfg.overwrite, clear=False)
        eps = list(episodes) if episodes is not None else load_episodes(cfg.dataset)
        if cfg.max_episodes is not None:
            eps = eps[: cfg.max_episodes]
        self.stats = (DatasetStats.from_dict(saved["stats"]) if saved else fit_stats(eps))
        self.teacher = None if cfg.variant == "baseline" else self._teacher_source(teacher)
        self.inputs = input_fingerprints(cfg, self.teacher)
        if saved:
            check_same_inputs(saved.get("inputs"), self.inputs, resume_ckpt)

        torch.manual_seed(cfg.seed)
        policy = build_student(cfg.student, cfg.student_preset, cfg.student_path, **cfg.student_config)
        if saved is not None:  # a resumed run must rebuild the very architecture it saved
            spec = student_spec(saved, resume_ckpt)
            # where the pretrained folder lies is not architecture: a run resumed on another
            # machine passes its own --student_path
            def arch(config: Any) -> Any:
                return {k: v for k, v in config.items() if k != "student_path"} \
                    if isinstance(config, dict) else config

            if spec["kind"] != policy.kind or arch(spec["config"]) != arch(json.loads(
                    json.dumps(policy.config_dict()))):
                raise RocketError(
                    f"{resume_ckpt} holds a {spec['kind']} student of another configuration; "
                    "resume with the checkpoint's --student/--student_preset or start a new run."
                )
        if cfg.lora_rank > 0:
            apply_lora(policy, cfg.lora_rank)
        if cfg.gradient_checkpointing:
            policy.enable_gradient_checkpointing()
        self.dataset = ChunkDataset(eps, self.stats, chunk=policy.chunk)
        self.align_config = build_align_config(cfg, policy, self.teacher)
        # Read back through from_dict, so fields added since (at their defaults: what the
        # checkpoint ran) do not count as a change.
        if saved and saved.get("align") and (
                AlignConfig.from_dict(saved["align"]).to_dict() != self.align_config.to_dict()):
            raise RocketError(
                "the checkpoint's alignment config (teacher dim/layers, position embedding) "
                "differs from this run's; resume with the same teacher, layer pairs and --pos_embed."
            )
        # Only now, with data, teacher (or its cache) and student checked, may --overwrite
        # clear the old run: a refused input never costs the user their previous checkpoints.
        if resume is None:  # a fresh run never mixes into an old one's checkpoints
            ckpt_io.prepare_fresh_run(cfg.out_dir, cfg.overwrite,
                                      clear=self.accelerator.is_main_process)
        self.model = RocketModel(policy, Aligner(self.align_config))
        self.optimizer = build_optimizer(self.model, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                         betas=cfg.betas)
        self.scheduler = build_scheduler(self.optimizer, warmup=cfg.warmup, steps=cfg.steps,
                                         schedule=cfg.schedule, decay_after=cfg.decay_after,
                                         floor=cfg.lr_floor)
        self.step = 0
        # Where the data stream stood at self.step: consumed samples are counted, not derived
        # from the step, so a run resumed with another number of processes continues the
        # same stream without repeating or skipping samples.
        self.data_step, self.data_position = 0, 0
        if resume_ckpt is not None:
            ckpt_io.load_weights(self.model, resume_ckpt)
            state = ckpt_io.load_trainer_state(resume_ckpt)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            self.step = int(state["step"])
            self.data_step = self.step
            self.data_position = int(state.get("data_position", 0))

        # The scheduler is stepped by hand (once per optimizer step on every rank), so it is
        # deliberately not prepared: Accelerate would step it once per process.
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.policy = self.accelerator.unwrap_model(self.model).policy
        self.aligner = self.accelerator.unwrap_model(self.model).aligner
        self.out_dir = Path(cfg.out_dir)
        # A checkpoint due but not yet known good: (step, CPU RNG state at that step).
        self._pending: tuple[int, torch.Tensor] | None = None
        self._written: Path | None = None

    def close(self) -> None:
        """Let go of the run folder without training (``fit`` lets go when it ends)."""
        self._lease.release()

    # -- checks ----------------------------------------------------------------------
    def _check_resume(self, resume: str | Path | None) -> tuple[Path | None, dict | None]:
        if resume is None:
            return None, None
        ckpt = ckpt_io.resolve_checkpoint(resume)
        saved = ckpt_io.read_config(ckpt)
        if "train" not in saved:
            raise RocketError(f"{ckpt} is not a `rocket train` checkpoint; pass one it wrote.")
        ckpt_io.require_config_digest(ckpt, saved)
        student_spec(saved, ckpt)  # refuses configs of other formats in one sentence
        before = TrainConfig.from_dict(saved["train"])
        changed = self.cfg.changed_fields(before)
        if changed:
            detail = ", ".join(
                f"{k}: {before.to_dict()[k]!r} -> {self.cfg.to_dict()[k]!r}" for k in changed
            )
            raise RocketError(
                f"cannot resume {ckpt} with changed hyper-parameters ({detail}); use the "
                "checkpoint's settings or start a new run."
            )
        check_same_code(saved.get("code_version"), f"the checkpoint {ckpt}",
                        "resume with the rocket-vla code that wrote it, or start a new run "
                        "(a new --out_dir folder, or --overwrite).")
        if self.cfg.schedule == "cosine" and self.cfg.steps != before.steps:
            raise RocketError(
                "the cosine schedule depends on --steps; resume with the same --steps "
                f"({before.steps}) or start a new run."
            )
        return ckpt, saved

    def _teacher_source(self, teacher: Any) -> TeacherSource:
        if teacher is None and self.cfg.teacher_cache:
            from rocket_vla.data.dataset import CAMERAS
            from rocket_vla.train.teacher_source import DiskCacheTeacher

            return DiskCacheTeacher(self.cfg.teacher_cache, CAMERAS, _dataset_fingerprint(self.cfg))
        if teacher is None:
            from rocket_vla.teachers.build import teacher_from_spec

            teacher = teacher_from_spec(self.cfg.teacher, self.cfg.teacher_size,
                                        device=str(self.accelerator.device))
        elif callable(getattr(teacher, "to", None)) and hasattr(teacher, "model"):
            teacher.to(self.accelerator.device)  # a Teacher: run it where the student runs
        source = teacher
        if not hasattr(source, "features"):
            raise RocketError("the teacher has no features(); pass a Teacher or a TeacherSource.")
        if not _is_source(source):
            source = LiveTeacher(source)
        return source

    # -- one step --------------------------------------------------------------------
    def _log_samples(self, step: int, micro: int, start: int, order: np.ndarray) -> None:
        """Append this rank's dataset indices to ``samples/rank<k>.jsonl`` (data-order audits)."""
        folder = self.out_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        row = {"step": step, "micro": micro, "start": start, "processes": self.accelerator.num_processes,
               "indices": [int(i) for i in order]}
        with (folder / f"rank{self.accelerator.process_index}.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")

    def _batch(self, step: int, micro: int, log: bool = True) -> dict[str, Any]:
        acc = self.accelerator
        per_rank = self.cfg.batch_size
        micro_index = (step - self.data_step) * self.cfg.grad_accum + micro
        start = (self.data_position + (micro_index * acc.num_processes + acc.process_index)
                 * per_rank)
        order = sample_order(len(self.dataset), self.cfg.seed, start, per_rank)
        if log and self.cfg.log_samples:
            self._log_samples(step, micro, start, order)
        return default_collate([self.dataset[int(i)] for i in order])

    def _losses(self, batch: dict[str, Any], gen: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device = self.accelerator.device
        frames = images_to_float(batch["images"])
        images, boxes = augment_views(frames, self.policy.image_size, self.cfg.augment, gen)
        targets = None
        if self.aligner.enabled:
            assert self.teacher is not None
            feats = self.teacher.features(batch, frames.to(device),
                                          self.align_config.teacher_layers)
            targets = self.aligner.targets([f.to(device) for f in feats],
                                           self.policy.image_grid, boxes.to(device))
        inputs = self.policy.prepare({
            "images": images, "proprio": batch["proprio"], "instructions": batch["instruction"],
            "actions": batch["actions"], "action_mask": batch["action_mask"],
        })
        action_loss, out = self.model(inputs, targets)
        action_loss = action_loss.float()
        if out is None:
            return action_loss, action_loss, torch.zeros(0)
        return action_loss + out.weighted, action_loss, out.per_pair

    def train_step(self, step: int) -> dict[str, Any]:
        """One optimizer step; a checkpoint pending from the previous step is written once
        this step's loss (at its weights) came out finite, before the update."""
        cfg, acc = self.cfg, self.accelerator
        self.model.train()
        totals = {"action": 0.0, "total": 0.0}
        pairs = torch.zeros(self.align_config.num_pairs if self.aligner.enabled else 0)
        for micro in range(cfg.grad_accum):
            batch = self._batch(step, micro)
            gen = step_generator(cfg.seed, step, micro, acc.process_index)
            last = micro == cfg.grad_accum - 1
            ctx = acc.no_sync(self.model) if not last else contextlib.nullcontext()
            with ctx:
                total, action, per_pair = self._losses(batch, gen)
                acc.backward(total / cfg.grad_accum)
            totals["action"] += float(action.detach()) / cfg.grad_accum
            totals["total"] += float(total.detach()) / cfg.grad_accum
            if per_pair.numel():
                pairs += per_pair.cpu() / cfg.grad_accum
        _stop_if_not_finite(acc, step, totals, self.out_dir)
        self._write_pending()
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {**totals, "pairs": pairs.tolist(), "grad_norm": float(grad_norm),
                "lr": self.scheduler.get_last_lr()[0]}

    # -- checkpoints -----------------------------------------------------------------
    def checkpoint_config(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "policy": self.policy.kind,  # `rocket eval --policy checkpoint` reads it
            "student": {"kind": self.policy.kind, "config": self.policy.config_dict(),
                        "lora": lora_settings(self.cfg.lora_rank),
                        "pretrained": self.cfg.student_path},
            "train": self.cfg.to_dict(),
            "align": self.align_config.to_dict(),
            "stats": self.stats.to_dict(),
            "code_version": code_version(),
            "inputs": self.inputs,
        }

    def save(self, step: int, rng: torch.Tensor | None = None) -> Path | None:
        """Write the checkpoint of ``step`` now (refused if the weights are not finite).

        ``rng``: the CPU RNG state at ``step`` when it is written later (default: now).
        """
        acc = self.accelerator
        acc.wait_for_everyone()
        if not acc.is_main_process:
            return None
        state = {
            "step": step,
            "data_position": self.data_position + (step - self.data_step) * self.cfg.grad_accum
            * self.cfg.batch_size * acc.num_processes,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state() if rng is None else rng,
        }
        self._written = ckpt_io.save_checkpoint(
            self.out_dir / "checkpoints", step, acc.unwrap_model(self.model),
            self.checkpoint_config(), state, keep_last=self.cfg.keep_last,
            assets=self.policy.asset_files(),
        )
        return self._written

    def _write_pending(self) -> None:
        if self._pending is not None:
            step, rng = self._pending
            self._pending = None
            self.save(step, rng)

    def _save_last(self, step: int) -> None:
        """The run's last checkpoint: no next step will try its weights, so a forward pass
        on the batch that step would take does (no update, no sample log, RNG untouched)."""
        acc = self.accelerator
        devices = [acc.device] if acc.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            batch = self._batch(step, 0, log=False)
            total, _, _ = self._losses(batch, step_generator(self.cfg.seed, step, 0,
                                                             acc.process_index))
        loss = float(total.detach())
        if _any_rank(acc, not math.isfinite(loss)):
            raise RocketError(
                f"the loss at the weights of step {step} is not finite ({loss}), so they were not "
                f"saved; {ckpt_io.after_bad_step(self.out_dir)}"
            )
        self.save(step)

    # -- the loop --------------------------------------------------------------------
    def describe(self) -> str:
        a = self.align_config
        pairs = (f"student {a.student_layers} <-> teacher {a.teacher_layers} "
                 f"(index k = stream after block k), projector={a.projector}, "
                 f"matryoshka={a.matryoshka}, weight={a.weight}" if a.enabled
                 else "no alignment (no teacher)")
        preset = f"-{self.cfg.student_preset}" if self.cfg.student_preset else ""
        lora = f", LoRA r={self.cfg.lora_rank}" if self.cfg.lora_rank else ""
        return (f"variant={self.cfg.variant} | {self.policy.kind}{preset} "
                f"{self.policy.num_parameters() / 1e6:.2f}M params "
                f"({self.policy.num_parameters(trainable=True) / 1e6:.2f}M trained{lora}) | "
                f"{len(self.dataset)} samples | {self.accelerator.num_processes} process(es) "
                f"({self.accelerator.distributed_type.value}) "
                f"| {pairs}")

    def fit(self) -> TrainResult:
        """Train to ``cfg.steps`` holding the run folder; a full disk is one sentence."""
        if self.accelerator.is_main_process:
            self._lease.acquire()
        try:
            return self._fit()
        except OSError as err:
            if not ckpt_io.is_disk_full(err):
                raise
            raise ckpt_io.storage_error(err, self.out_dir, "the run's logs") from err
        finally:
            self._lease.release()

    def _fit(self) -> TrainResult:
        cfg, acc = self.cfg, self.accelerator
        main = acc.is_main_process
        self._pending, self._written = None, None
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            print(f"[rocket train] {self.describe()}", flush=True)
        writer = _tensorboard(self.out_dir / "tb") if (main and cfg.tensorboard) else None
        bar = _progress(cfg.steps, self.step, main and cfg.progress)
        result = TrainResult(self.step, None)
        samples_per_step = cfg.batch_size * cfg.grad_accum * acc.num_processes
        if main:  # rows past the resumed step (or all, for a fresh run) belong to no checkpoint
            _trim_metrics(self.out_dir / "metrics.jsonl", self.step)
        metrics_file = (self.out_dir / "metrics.jsonl").open("a") if main else None
        t0 = time.perf_counter()
        window_t, window_steps = t0, 0
        start = self.step
        try:
            for step in range(self.step, cfg.steps):
                m = self.train_step(step)
                self.step = step + 1
                window_steps += 1
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    now = time.perf_counter()
                    m["samples_per_s"] = window_steps * samples_per_step / (now - window_t)
                    window_t, window_steps = now, 0
                    row = {"step": self.step, **m}
                    result.history.append(row)
                    if main:
                        _log(writer, metrics_file, row)
                        if bar is not None:
                            bar.set_postfix(action=f"{m['action']:.4f}",
                                            align=f"{sum(m['pairs']) / max(1, len(m['pairs'])):.4f}")
                if bar is not None:
                    bar.update(1)
                if self.step == cfg.steps:
                    self._save_last(self.step)
                elif self.step % cfg.save_every == 0:
                    self._pending = (self.step, torch.get_rng_state())
        finally:
            self._pending = None
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
            if metrics_file is not None:
                metrics_file.close()
        result.step = self.step
        result.checkpoint = self._written
        result.seconds = time.perf_counter() - t0
        done = self.step - start
        result.samples_per_s = done * samples_per_step / result.seconds if done else 0.0
        return result


def train(cfg: TrainConfig, **kwargs: Any) -> TrainResult:
    """Build a :class:`Trainer` (all checks first) and run it to ``cfg.steps``."""
    return Trainer(cfg, **kwargs).fit()


# ----------------------------------------------------------------------------- helpers
def _any_rank(acc: Any, bad: bool) -> bool:
    """True when ``bad`` holds on any rank: every rank takes the same decision (one
    all-reduce), so no process is left waiting for the others."""
    flag = torch.tensor([1.0 if bad else 0.0], device=acc.device)
    if acc.num_processes > 1:
        flag = acc.reduce(flag, reduction="sum")
    return float(flag.sum()) > 0


def _stop_if_not_finite(acc: Any, step: int, totals: dict[str, float], out_dir: Path) -> None:
    """Stop before a non-finite loss reaches the weights (no optimizer step, no checkpoint).

    A NaN loss makes every later step NaN, so training on would only overwrite good
    checkpoints with garbage. The checkpoint pending from the step before is dropped too:
    its weights are the ones that gave this loss.
    """
    if not _any_rank(acc, not math.isfinite(totals["total"])):
        return
    raise RocketError(
        f"the training loss became non-finite at step {step + 1} (action {totals['action']}, total "
        f"{totals['total']}); {ckpt_io.after_bad_step(out_dir)}"
    )


def input_fingerprints(cfg: TrainConfig, teacher: Any) -> dict[str, str | None]:
    """What the run reads besides its config: the dataset's files (names and sizes -- cheap
    enough for any dataset; the teacher cache compares full contents) and the teacher's
    fingerprint (weights behind a name like ``tiny`` can change). None where unknown."""
    dataset = None
    if cfg.dataset:
        import hashlib

        from rocket_vla.data.episodes import dataset_files

        digest = hashlib.blake2b(digest_size=12)
        for path in dataset_files(cfg.dataset):
            digest.update(f"{path.name}:{path.stat().st_size};".encode())
        dataset = digest.hexdigest()
    fingerprint = None
    if teacher is not None:
        spec = getattr(getattr(teacher, "cache", None), "spec", None)
        inner = getattr(teacher, "teacher", teacher)
        if spec is not None:
            fingerprint = spec.teacher
        elif callable(getattr(inner, "fingerprint", None)):
            fingerprint = str(inner.fingerprint())
    return {"dataset": dataset, "teacher": fingerprint}


def check_same_inputs(saved: dict[str, Any] | None, current: dict[str, Any], ckpt: Any) -> None:
    """Refuse to resume a checkpoint trained on another dataset or teacher (where both known)."""
    changed = [k for k, v in (saved or {}).items() if v is not None and current.get(k) not in (None, v)]
    if changed:
        raise RocketError(
            f"cannot resume {ckpt}: it was trained with another {' and '.join(changed)}; resume with "
            "the same ones, or start a new run (a new --out_dir folder, or --overwrite)."
        )


def _trim_metrics(path: Path, step: int) -> None:
    """Keep only the metrics rows up to ``step`` (rewritten atomically)."""
    if not path.is_file():
        return
    from rocket_vla import records

    kept = [r for r in records.read(path) if int(r.get("step", 0)) <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _dataset_fingerprint(cfg: TrainConfig) -> str | None:
    """Content fingerprint of the training files (what a teacher cache records), if any."""
    if not cfg.dataset:
        return None
    from rocket_vla.data.episodes import dataset_files
    from rocket_vla.teachers.cache import fingerprint_files

    return fingerprint_files(dataset_files(cfg.dataset))


def _is_source(obj: Any) -> bool:
    """A TeacherSource takes the batch as well as the frames; a bare Teacher does not."""
    import inspect

    try:
        params = inspect.signature(obj.features).parameters
    except (TypeError, ValueError):
        return False
    return "batch" in params


def _tensorboard(path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is in the [train] extra
        print("[rocket train] tensorboard is not installed; logging to metrics.jsonl only")
        return None
    return SummaryWriter(str(path))


def _progress(total: int, initial: int, enabled: bool) -> Iterator[Any] | Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


def _log(writer: Any, metrics_file: Any, row: dict[str, Any]) -> None:
    step = row["step"]
    if writer is not None:
        writer.add_scalar("loss/total", row["total"], step)
        writer.add_scalar("loss/action_l1", row["action"], step)
        for i, v in enumerate(row["pairs"]):
            writer.add_scalar(f"align/pair_{i}", v, step)
        if row["pairs"]:
            writer.add_scalar("loss/align", sum(row["pairs"]) / len(row["pairs"]), step)
        writer.add_scalar("opt/lr", row["lr"], step)
        writer.add_scalar("opt/grad_norm", row["grad_norm"], step)
        writer.add_scalar("perf/samples_per_s", row["samples_per_s"], step)
    if metrics_file is not None:
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()
