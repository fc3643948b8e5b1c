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
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import default_collate

from rocket_vla.align import Aligner
from rocket_vla.data.augment import augment_views
from rocket_vla.data.dataset import ChunkDataset, fit_stats, images_to_float
from rocket_vla.data.normalize import DatasetStats
from rocket_vla.errors import RocketError
from rocket_vla.fingerprint import code_version
from rocket_vla.optim import build_optimizer, build_scheduler
from rocket_vla.policies.student import (
    CHECKPOINT_FORMAT,
    apply_lora,
    build_student,
    lora_settings,
    student_class,
)
from rocket_vla.train import checkpoint as ckpt_io
from rocket_vla.train.compute import TOTALS, ComputeClock, model_size
from rocket_vla.train.config import TrainConfig
from rocket_vla.train.finite import refuse_non_finite_last, stop_if_not_finite
from rocket_vla.train.inputs import check_same_inputs, dataset_fingerprint, input_fingerprints
from rocket_vla.train.model import RocketModel, build_align_config
from rocket_vla.train.resume import check_resume, check_same_alignment, check_same_student
from rocket_vla.train.run_lock import RunLease
from rocket_vla.train.run_log import RunLog, describe_run, log_samples
from rocket_vla.train.setup import (
    check_data_shapes,
    clip_by_groups,
    data_shapes,
    load_episodes,
    make_accelerator,
    resolve_precision,
    sample_order,
    step_generator,
)
from rocket_vla.train.teacher_source import LiveTeacher, TeacherSource


# ----------------------------------------------------------------------------- results
@dataclass
class TrainResult:
    """What ``fit`` reached: ``seconds`` and ``samples_per_s`` cover this call only, while
    ``compute`` holds the run's totals across resumes (:mod:`rocket_vla.train.compute`)."""

    step: int
    checkpoint: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    samples_per_s: float = 0.0
    seconds: float = 0.0
    compute: dict[str, Any] = field(default_factory=dict)


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
        resume_ckpt, saved = check_resume(cfg, resume)
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
        shapes = data_shapes(self.stats, student_class(cfg.student).config_class)
        policy = build_student(cfg.student, cfg.student_preset, cfg.student_path,
                               **{**shapes, **cfg.student_config})
        check_data_shapes(policy, self.stats)
        if saved is not None:  # a resumed run must rebuild the very architecture it saved
            check_same_student(saved, resume_ckpt, policy)
        if cfg.lora_rank > 0:
            apply_lora(policy, cfg.lora_rank)
        if cfg.gradient_checkpointing:
            policy.enable_gradient_checkpointing()
        self.dataset = ChunkDataset(eps, self.stats, chunk=policy.chunk)
        self.align_config = build_align_config(cfg, policy, self.teacher)
        if saved:
            check_same_alignment(saved, self.align_config)
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
        self.clock = ComputeClock()
        if resume_ckpt is not None:
            ckpt_io.load_weights(self.model, resume_ckpt)
            state = ckpt_io.load_trainer_state(resume_ckpt)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            self.step = int(state["step"])
            self.data_step = self.step
            self.data_position = int(state.get("data_position", 0))
            self.clock = ComputeClock(state["compute"])

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

    # -- inputs ----------------------------------------------------------------------
    def _teacher_source(self, teacher: Any) -> TeacherSource:
        if teacher is None and self.cfg.teacher_cache:
            from rocket_vla.data.dataset import CAMERAS
            from rocket_vla.train.teacher_source import DiskCacheTeacher

            return DiskCacheTeacher(self.cfg.teacher_cache, CAMERAS, dataset_fingerprint(self.cfg))
        if teacher is None:
            from rocket_vla.teachers.build import teacher_from_spec

            teacher = teacher_from_spec(self.cfg.teacher, self.cfg.teacher_size,
                                        dtype=self.cfg.teacher_dtype,
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
    def _batch(self, step: int, micro: int, log: bool = True) -> dict[str, Any]:
        acc = self.accelerator
        per_rank = self.cfg.batch_size
        micro_index = (step - self.data_step) * self.cfg.grad_accum + micro
        start = (self.data_position + (micro_index * acc.num_processes + acc.process_index)
                 * per_rank)
        order = sample_order(len(self.dataset), self.cfg.seed, start, per_rank)
        if log and self.cfg.log_samples:
            log_samples(self.out_dir / "samples", step, micro, start, order,
                        acc.process_index, acc.num_processes)
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
        stop_if_not_finite(acc, step, totals, self.out_dir)
        self._write_pending()
        grad_norm = clip_by_groups(acc, [self.policy.parameters(), self.aligner.parameters()],
                                   cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {**totals, "pairs": pairs.tolist(), "grad_norm": float(grad_norm),
                "lr": self.scheduler.get_last_lr()[0]}

    # -- checkpoints -----------------------------------------------------------------
    def samples_seen(self, step: int) -> int:
        """Training samples consumed by all processes up to ``step``: the data stream's
        position there, so a resumed run counts exactly as an uninterrupted one."""
        return (self.data_position + (step - self.data_step) * self.cfg.grad_accum
                * self.cfg.batch_size * self.accelerator.num_processes)

    def compute(self, step: int) -> dict[str, Any]:
        """The run's compute record at ``step`` (every process must call it together)."""
        return {**self.clock.totals(self.accelerator, self.samples_seen(step)),
                "processes": self.accelerator.num_processes,
                **model_size(self.policy, self.aligner)}

    def checkpoint_config(self, compute: dict[str, Any]) -> dict[str, Any]:
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
            "compute": compute,
        }

    def save(self, step: int, rng: torch.Tensor | None = None) -> Path | None:
        """Write the checkpoint of ``step`` now (refused if the weights are not finite).

        ``rng``: the CPU RNG state at ``step`` when it is written later (default: now).
        """
        acc = self.accelerator
        acc.wait_for_everyone()
        compute = self.compute(step)
        if not acc.is_main_process:
            return None
        state = {
            "step": step,
            "data_position": self.samples_seen(step),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state() if rng is None else rng,
            "compute": {k: compute[k] for k in TOTALS},
        }
        self._written = ckpt_io.save_checkpoint(
            self.out_dir / "checkpoints", step, acc.unwrap_model(self.model),
            self.checkpoint_config(compute), state, keep_last=self.cfg.keep_last,
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
        refuse_non_finite_last(acc, step, float(total.detach()), self.out_dir)
        self.save(step)

    # -- the loop --------------------------------------------------------------------
    def describe(self) -> str:
        """One line saying what this run trains (printed when it starts)."""
        return describe_run(self.cfg, self.policy, self.align_config, len(self.dataset),
                            self.accelerator)

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
        log = RunLog(self.out_dir, cfg.steps, self.step, main=main, tensorboard_on=cfg.tensorboard,
                     progress=cfg.progress)
        result = TrainResult(self.step, None)
        samples_per_step = cfg.batch_size * cfg.grad_accum * acc.num_processes
        t0 = time.perf_counter()
        self.clock.start()
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
                    spent = self.clock.totals(acc, self.samples_seen(self.step))
                    row = {"step": self.step, **m, **spent}
                    result.history.append(row)
                    log.row(row)
                log.advance()
                if self.step == cfg.steps:
                    self._save_last(self.step)
                elif self.step % cfg.save_every == 0:
                    self._pending = (self.step, torch.get_rng_state())
        finally:
            self._pending = None
            log.close()
        result.step = self.step
        result.checkpoint = self._written
        result.seconds = time.perf_counter() - t0
        done = self.step - start
        result.samples_per_s = done * samples_per_step / result.seconds if done else 0.0
        result.compute = self.compute(self.step)
        return result


def train(cfg: TrainConfig, **kwargs: Any) -> TrainResult:
    """Build a :class:`Trainer` (all checks first) and run it to ``cfg.steps``."""
    return Trainer(cfg, **kwargs).fit()


# ----------------------------------------------------------------------------- helpers
def _is_source(obj: Any) -> bool:
    """A TeacherSource takes the batch as well as the frames; a bare Teacher does not."""
    import inspect

    try:
        params = inspect.signature(obj.features).parameters
    except (TypeError, ValueError):
        return False
    return "batch" in params
