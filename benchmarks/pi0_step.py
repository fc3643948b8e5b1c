"""pi0 training step: flow-matching baseline vs ROCKET (cached / live VGGT teacher), plus parts.

Run through ``benchmarks/train_step.py --student pi0`` (this file holds the pi0 half of
that script). The student is transformers' ``PI0ForConditionalGeneration`` built from a
config with random weights -- ``--size tiny`` for a CPU, ``--size default`` (3.5 B
parameters, the issue's shapes) for a GPU -- fed inputs built here: ``cameras`` images of
``image_size`` px whose tokens come first in ``input_ids`` (pi0's layout), then
``text_tokens`` text tokens, a state, and an action chunk. The teacher is this project's
VGGT (``VGGTConfig.tiny``-style on a CPU, VGGT-1B on a GPU, random weights).

Steps (forward, backward, AdamW) are timed in interleaved rounds and the median round is
reported; on a CPU the clock is this process's CPU time on one thread (robust on a shared
machine), on CUDA wall time between device synchronisations. Modes:

* ``baseline``       -- pi0's flow-matching loss alone, no taps;
* ``rocket-cached``  -- + taps + ``Aligner.targets`` + the alignment loss, teacher features
  given (already on the device at float16, as a cache would deliver them);
* ``rocket-live-N``  -- the same with the VGGT teacher run on the step's frames at N px.

The breakdown then times the parts alone: the step with taps attached but unused, the
target resampling (fused vs one ``F.interpolate`` per layer), the aligner's forward +
backward eager and under ``torch.compile``, and the teacher per step (timed the way the
step runs it: inside the step's autocast, with the same runtime settings).

``--teacher-fast on`` (default) runs the live teacher with :class:`TeacherRuntime`'s
fast settings -- weights stored in bf16 on CUDA (``dtype="bfloat16"``), constants cached
per shape, every block under ``torch.compile`` on CUDA (``compile="auto"``) -- and
``off`` with the behaviour before them (float32 weights under autocast, constants rebuilt
per call, eager), for comparison. On a CPU ``on`` means float32, cached constants, eager.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rocket_vla.align import AlignConfig, Aligner, LayerTaps, resample_teacher
from rocket_vla.teachers.base import TeacherInput, TeacherRuntime
from rocket_vla.teachers.vggt import VGGTConfig, VGGTTeacher

BLOCKS = "model.vlm.language_model.layers"
FINAL = "model.vlm.language_model.norm"


# ----------------------------------------------------------------------------- models
def pi0_config(size: str, image_size: int, chunk: int):
    """``default``: transformers' PI0Config (PaliGemma 2B + 300M expert). ``tiny``: the same
    18 + 18 blocks at small widths; the expert's head_dim and key/value heads equal the
    VLM text model's, since the expert attends to the VLM's key/value cache."""
    from transformers import PI0Config

    if size == "default":
        cfg = PI0Config(chunk_size=chunk)
        cfg.vlm_config.vision_config.image_size = image_size
        return cfg
    text = dict(model_type="gemma", hidden_size=128, num_hidden_layers=18, intermediate_size=256,
                num_attention_heads=2, num_key_value_heads=1, head_dim=64, vocab_size=320)
    vision = dict(model_type="siglip_vision_model", hidden_size=64, intermediate_size=128,
                  patch_size=14, image_size=image_size, num_hidden_layers=2, num_attention_heads=2,
                  vision_use_head=False)
    expert = dict(model_type="gemma", hidden_size=64, num_hidden_layers=18, intermediate_size=128,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=64)
    return PI0Config(vlm_config=dict(model_type="paligemma", text_config=text, vision_config=vision,
                                     projection_dim=128, image_token_id=319),
                     dit_config=expert, chunk_size=chunk)


def vggt_config(size: str) -> VGGTConfig:
    """VGGT-1B, or a 24-pair aggregator at width 64 (the pi0 layout pairs up to block 24)."""
    return VGGTConfig() if size == "default" else VGGTConfig.tiny(depth=24, img_size=182)


class Pi0Batch:
    """pi0 inputs for one step: image tokens first in ``input_ids``, as pi0 lays them out."""

    def __init__(self, cfg, batch: int, cameras: int, text_tokens: int, device: torch.device,
                 dtype: torch.dtype, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        vision = cfg.vlm_config.vision_config
        px = vision.image_size
        self.tokens_per_image = (px // vision.patch_size) ** 2
        self.image_tokens = cameras * self.tokens_per_image
        vocab = cfg.vlm_config.text_config.vocab_size
        text = torch.randint(0, vocab - 1, (batch, text_tokens), generator=g)
        text = text.masked_fill(text == cfg.vlm_config.image_token_id, 0)
        image = torch.full((batch, self.image_tokens), cfg.vlm_config.image_token_id)
        self.input_ids = torch.cat([image, text], dim=1).to(device)
        self.attention_mask = torch.ones_like(self.input_ids)
        self.frames = torch.rand(batch, cameras, 3, px, px, generator=g).to(device)  # [0, 1]
        self.pixel_values = (self.frames * 2 - 1).to(dtype)  # SigLIP's [-1, 1]
        self.pixel_attention_mask = torch.ones(batch, cameras, dtype=torch.bool, device=device)
        self.state = torch.randn(batch, cfg.max_state_dim, generator=g).to(device, dtype)
        self.actions = torch.randn(batch, cfg.chunk_size, cfg.max_action_dim, generator=g).to(device, dtype)
        self.grid = (px // vision.patch_size, px // vision.patch_size)

    def loss(self, model) -> torch.Tensor:
        """pi0's flow-matching loss; noise and time drawn on the device (no host round trip)."""
        b = self.state.shape[0]
        noise = torch.randn_like(self.actions)
        timestep = torch.rand(b, device=self.actions.device) * 0.999 + 0.001
        out = model(state=self.state, input_ids=self.input_ids, pixel_values=self.pixel_values,
                    pixel_attention_mask=self.pixel_attention_mask, attention_mask=self.attention_mask,
                    actions=self.actions, noise=noise, timestep=timestep)
        return out.loss


# ----------------------------------------------------------------------------- timing
class Clock:
    """CPU: this process's CPU seconds (one thread). CUDA: wall seconds between syncs."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()

    def ms(self, fn: Callable[[], object], repeats: int) -> float:
        start = self.now()
        for _ in range(repeats):
            fn()
        return (self.now() - start) / repeats * 1000


def interleaved(parts: dict[str, Callable[[], object]], clock: Clock, rounds: int,
                repeats: dict[str, int] | int, warmup: int = 2) -> dict[str, list[float]]:
    """Per-call ms of every part in each of ``rounds`` rounds.

    Every part runs once per round, in an order shuffled per round (seeded): a small part
    timed right after a full training step finds cold caches, so a fixed order would
    favour whichever part comes later. ``repeats`` calls are averaged per timing.
    """
    for fn in parts.values():
        for _ in range(warmup):
            fn()
    order = list(parts)
    rng = random.Random(0)
    samples: dict[str, list[float]] = {k: [] for k in parts}
    for _ in range(rounds):
        rng.shuffle(order)
        for k in order:
            n = repeats if isinstance(repeats, int) else repeats.get(k, 1)
            samples[k].append(clock.ms(parts[k], n))
    return samples


def summary(samples: dict[str, list[float]], base: str | None = None) -> dict[str, dict]:
    """Median and range per part; with ``base``, the median over rounds of the per-round
    ratio to it -- a paired figure, steadier than a ratio of medians when the machine's
    load drifts between rounds."""
    out = {}
    for k, v in samples.items():
        row = {"ms": round(statistics.median(v), 2), "min": round(min(v), 2), "max": round(max(v), 2)}
        if base is not None:
            ratios = [a / b for a, b in zip(v, samples[base], strict=True)]
            row["vs_baseline"] = round(statistics.median(ratios), 3)
        out[k] = row
    return out


# ----------------------------------------------------------------------------- steps
class Pi0Step:
    """One optimizer step of pi0, optionally with ROCKET; its parts are callable alone."""

    def __init__(self, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
        from transformers import PI0ForConditionalGeneration

        torch.manual_seed(0)
        self.cfg = pi0_config(args.size, args.image_size, args.chunk)
        with torch.device(device):  # build where it runs: 3.5 B float32 parameters at default size
            self.model = PI0ForConditionalGeneration(self.cfg)
        self.model.to(dtype).train()
        self.device, self.dtype = device, dtype
        self.batch = Pi0Batch(self.cfg, args.batch_size, args.cameras, args.text_tokens, device, dtype)
        text = self.cfg.vlm_config.text_config
        self.teacher_cfg = vggt_config(args.size)
        self.align_cfg = AlignConfig.preset(
            "rocket", layout="pi0", student_dim=text.hidden_size, teacher_dim=2 * self.teacher_cfg.embed_dim,
            student_depth=text.num_hidden_layers, teacher_depth=self.teacher_cfg.depth,
            hidden_dim=args.projector_hidden,
        )
        compile_flag = {"auto": None, "on": True, "off": False}[args.compile_aligner]
        self.aligner = Aligner(self.align_cfg, compile=compile_flag).to(device)
        self.taps = LayerTaps(self.model, BLOCKS, self.align_cfg.student_layers,
                              spans=[(0, self.batch.image_tokens)], final=FINAL)
        params = list(self.model.parameters()) + list(self.aligner.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
        self.teacher_runtime = teacher_runtime(args.teacher_fast)
        self.teachers: dict[int, VGGTTeacher] = {}
        self.cached: list[torch.Tensor] | None = None
        self.autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32
                         else contextlib.nullcontext())

    def teacher(self, px: int) -> VGGTTeacher:
        if px not in self.teachers:
            shared = next(iter(self.teachers.values()), None)
            t = VGGTTeacher(self.teacher_cfg, TeacherInput(size=(px, px)), device=self.device,
                            materialise=shared is None, runtime=self.teacher_runtime)
            if shared is not None:  # one set of weights, several input sizes
                t.model = shared.model
            self.teachers[px] = t
        return self.teachers[px]

    def teacher_features(self, px: int) -> list[torch.Tensor]:
        return self.teacher(px).features(self.batch.frames, self.align_cfg.teacher_layers)

    def teacher_alone(self, px: int) -> list[torch.Tensor]:
        """The teacher as the live step runs it: inside the step's autocast."""
        with self.autocast:
            return self.teacher_features(px)

    def cache_features(self, px: int) -> None:
        """Features as a cache hands them over: float16, already on the device."""
        self.cached = [f.to(torch.float16) for f in self.teacher_features(px)]

    def targets(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.aligner.targets(feats, self.batch.grid, dtype=self.dtype)

    def step(self, mode: str, live_px: int | None = None) -> None:
        """``baseline``, ``taps`` (attached, unused), ``cached`` or ``live``."""
        with self.autocast:
            if mode == "baseline":
                loss = self.batch.loss(self.model)
            else:
                self.taps.attach()
                try:
                    loss = self.batch.loss(self.model)
                    if mode != "taps":
                        feats = self.cached if mode == "cached" else self.teacher_features(live_px)
                        loss = loss + self.aligner(self.taps.states, self.targets(feats)).weighted
                finally:
                    self.taps.remove()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def teacher_runtime(fast: str) -> TeacherRuntime:
    """``on``: bf16 weights + per-block compile where they apply (CUDA); ``off``: as before."""
    if fast == "on":
        # one compiled graph per block shape (DINO / frame / global) per input size: raise
        # dynamo's per-code-object limit above the handful this benchmark needs
        cfg = torch._dynamo.config
        name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
        setattr(cfg, name, max(getattr(cfg, name), 32))
        # bf16 weights where they apply (CUDA), as the figures in docs/benchmarks.md were made
        dtype = "bfloat16" if torch.cuda.is_available() else "float32"
        return TeacherRuntime(dtype=dtype, cache_constants=True, compile="auto")
    return TeacherRuntime(dtype="float32", cache_constants=False, compile="off")


def previous_targets(feats: list[torch.Tensor], grid: tuple[int, int], scale: float,
                     dtype: torch.dtype) -> list[torch.Tensor]:
    """``Aligner.targets`` before this change, for comparison: layers concatenated along
    channels, the embedding built on the host and added at the teacher grid, one
    ``F.interpolate``, then split and copied per layer."""
    from rocket_vla.align import sincos_pos_embed_2d

    feats = [f.to(dtype) for f in feats]
    _, _, h, w, c = feats[0].shape
    stacked = torch.cat(feats, dim=-1)
    pos = sincos_pos_embed_2d(c, h, w).to(device=stacked.device, dtype=stacked.dtype)
    stacked = stacked + scale * pos.permute(1, 2, 0).repeat(1, 1, len(feats))
    out = resample_teacher(stacked, grid)
    return [part.contiguous() for part in out.split(c, dim=-1)]


def aligner_parts(step: Pi0Step) -> dict[str, Callable[[], object]]:
    """The alignment loss alone on states of the tapped shape: eager and compiled."""
    b = step.batch
    states = [torch.randn(b.state.shape[0], b.image_tokens, step.align_cfg.student_dim, device=step.device,
                          dtype=step.dtype, requires_grad=True) for _ in step.align_cfg.student_layers]
    targets = step.targets(step.cached)
    eager = Aligner(step.align_cfg, compile=False).to(step.device)
    compiled = Aligner(step.align_cfg, compile=True).to(step.device)
    compiled.load_state_dict(eager.state_dict())

    def run(aligner: Aligner) -> Callable[[], object]:
        def fn() -> None:
            with step.autocast:
                out = aligner(states, targets)
            out.weighted.backward()
            aligner.zero_grad(set_to_none=True)
            for s in states:
                s.grad = None
        return fn

    return {"aligner fwd+bwd, eager": run(eager), "aligner fwd+bwd, torch.compile": run(compiled)}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="pi0 train step: baseline vs ROCKET, with the breakdown")
    p.add_argument("--student", default="pi0")
    p.add_argument("--size", choices=["tiny", "default"], default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (CUDA default)")
    p.add_argument("--batch-size", type=int, default=None, help="tiny: 2, default: 8")
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument("--image-size", type=int, default=None, help="student px (tiny: 112, default: 224)")
    p.add_argument("--text-tokens", type=int, default=48)
    p.add_argument("--chunk", type=int, default=50)
    p.add_argument("--projector-hidden", type=int, default=None, help="tiny: 64, default: 2048")
    p.add_argument("--teacher-px", default=None,
                   help="live-teacher input sizes, comma-separated (tiny: 182; default: 224,518)")
    p.add_argument("--cache-px", type=int, default=None, help="teacher px of the cached features")
    p.add_argument("--compile-aligner", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--teacher-fast", choices=["on", "off"], default="on",
                   help="live teacher: bf16 weights + cached constants + per-block torch.compile "
                        "on CUDA (on), or float32 weights under autocast, eager (off)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=1, help="timed steps per mode per round")
    p.add_argument("--part-repeats", type=int, default=10,
                   help="calls averaged per timing of the small parts (targets, aligner)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    tiny = args.size == "tiny"
    args.batch_size = args.batch_size or (2 if tiny else 8)
    args.image_size = args.image_size or (112 if tiny else 224)
    args.projector_hidden = args.projector_hidden or (64 if tiny else 2048)
    live = [int(v) for v in (args.teacher_px or ("182" if tiny else "224,518")).split(",") if v]
    cache_px = args.cache_px or live[-1]
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    clock = Clock(device)

    step = Pi0Step(args, device, dtype)
    step.cache_features(cache_px)
    modes: dict[str, Callable[[], object]] = {
        "pi0 flow-matching loss alone": lambda: step.step("baseline"),
        "+ ROCKET, teacher features given (cached)": lambda: step.step("cached"),
    }
    for px in live:
        modes[f"+ live VGGT on the step's views at {px} px"] = (lambda px=px: step.step("live", px))
    table = summary(interleaved(modes, clock, args.rounds, args.steps), "pi0 flow-matching loss alone")

    feats = step.cached
    scale = step.align_cfg.pos_embed_scale
    parts: dict[str, Callable[[], object]] = {
        "step with taps attached (unused)": lambda: step.step("taps"),
        "step, baseline (same rounds)": lambda: step.step("baseline"),
        "Aligner.targets (from the float16 cache, at the compute dtype)": lambda: step.targets(feats),
        "targets, previous code (cat + embedding at teacher grid + F.interpolate + split)":
            lambda: previous_targets(feats, step.batch.grid, scale, dtype),
        "targets, one F.interpolate per layer": lambda: [
            resample_teacher(f.to(dtype), step.batch.grid, pos_embed_scale=scale,
                             pos_embed=step.align_cfg.pos_embed) for f in feats],
        **aligner_parts(step),
    }
    for px in live:
        parts[f"teacher alone at {px} px"] = (lambda px=px: step.teacher_alone(px))
    small = {k: args.part_repeats for k in parts if not k.startswith(("step", "teacher"))}
    part_samples = interleaved(parts, clock, args.rounds, {**small, **{k: args.steps for k in parts
                                                                        if k not in small}})
    breakdown = summary(part_samples)
    diffs = [a - b for a, b in zip(part_samples["step with taps attached (unused)"],
                                   part_samples["step, baseline (same rounds)"], strict=True)]
    breakdown["taps attached (median of per-round differences)"] = {
        "ms": round(statistics.median(diffs), 2), "min": round(min(diffs), 2), "max": round(max(diffs), 2)}

    b = step.batch
    result = {
        "command": " ".join(["python", "benchmarks/train_step.py", *argv]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
                   f"{torch.__version__}, {torch.get_num_threads()} threads"
                   + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        "clock": "wall between CUDA syncs" if clock.cuda else "process CPU time",
        "load_average": os.getloadavg(),
        "shapes": {
            "pi0_params_M": round(sum(q.numel() for q in step.model.parameters()) / 1e6, 2),
            "batch": args.batch_size, "cameras": args.cameras, "image_px": args.image_size,
            "image_tokens": b.image_tokens, "text_tokens": args.text_tokens, "chunk": args.chunk,
            "student_grid": list(b.grid), "teacher_dim": step.align_cfg.teacher_dim,
            "teacher_blocks": step.teacher_cfg.depth, "pairs": step.align_cfg.num_pairs,
            "projector": [step.align_cfg.student_dim, args.projector_hidden, step.align_cfg.teacher_dim],
            "cached_teacher_grid": list(feats[0].shape[2:4]), "dtype": str(dtype),
            "aligner_compiled_in_steps": step.aligner.compiles_on(device),
            "teacher_fast": args.teacher_fast, "teacher_runtime": vars(step.teacher_runtime),
            "teacher_weights_dtype": str(step.teacher(live[0]).compute_dtype()),
        },
        "steps_ms": table,
        "breakdown_ms": breakdown,
    }
    print(json.dumps(result, indent=2))
    print()
    print("| training step | ms (median of rounds) | range | vs baseline (median of per-round ratios) |")
    print("|---|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | {row['ms']} | {row['min']}-{row['max']} | {row['vs_baseline']:.3f} |")
    print()
    print("| part (timed alone) | ms (median of rounds) | range |")
    print("|---|---|---|")
    for name, row in breakdown.items():
        print(f"| {name} | {row['ms']} | {row['min']}-{row['max']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
