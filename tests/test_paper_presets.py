"""Every paper preset equals the official ROCKET run it reproduces.

``OFFICIAL`` is written from the official release (github.com/CASE-Lab-UMD/ROCKET-VLA,
commit d3da2c7), not from this library; each entry names its file. The tests convert the
official layer strings with the index convention of the trainer that ran them (also cited)
and compare the result with what ``rocket train --config paper_*`` builds.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rocket_vla.align import AlignConfig, Aligner
from rocket_vla.align.config import PAPER_PAIRS, PAPER_SF_LAYER
from rocket_vla.align.matryoshka import matryoshka_widths
from rocket_vla.config_cli import build_parser, parse_config
from rocket_vla.errors import RocketError
from rocket_vla.policies.student import build_student
from rocket_vla.teachers.base import TeacherInput, TeacherRuntime
from rocket_vla.teachers.build import TeacherConfig, build_teacher
from rocket_vla.teachers.vggt import VGGTConfig, VGGTTeacher
from rocket_vla.train.config import TrainConfig
from rocket_vla.train.loop import build_align_config

#: setting -> what the official code sets. vla/vggt: the layer strings; trainer: whose index
#: convention they are in; hidden: AlignProjector's default 2 * vggt_dim (vggt_dim = 1024).
OFFICIAL = {
    "paper_openvla": {  # openvla-ROCKET/ROCKET-VLA_scripts/training_scripts/run_align10_rocket.sh
        "vla": "2,4,6,8,10,12,14,16,18,-1", "vggt": "2,4,6,8,10,12,14,16,18,-1",
        "trainer": "openvla-tuple", "lambda": 0.5, "share": True, "matryoshka": True,
        "hidden": 2 * 1024,  # openvla-ROCKET/prismatic/models/projectors_rocket.py
        "student": "oft", "teacher_dtype": "auto",  # finetune_rocket.py: fp32 VGGT under autocast
    },
    "paper_pi0": {  # openpi-ROCKET/src/openpi/training/config.py: pi0_base_aloha_robotwin_lora_rocket_MPA
        "vla": "2,3,4,5,6,7,8,9,10,-1", "vggt": "2,4,6,8,10,12,14,16,18,-1",
        "trainer": "jax", "lambda": 0.125, "share": True, "matryoshka": True,
        "hidden": 2 * 1024,  # openpi-ROCKET/src/openpi/models/pi0_align.py (JAX AlignProjector)
        "student": "pi0", "teacher_dtype": "bfloat16",  # scripts/train_jax_ROCKET.py casts VGGT
        # the run's optimiser: openpi's TrainConfig defaults (optimizer.py: CosineDecaySchedule
        # warm-up 1000, peak 2.5e-5, 30k decay steps to 2.5e-6; AdamW b2 0.95, wd 1e-10, clip 1),
        # batch_size=16 (total), num_train_steps=30_000, gemma_2b_lora: LoRA rank 16
        "optim": {"lr": 2.5e-5, "schedule": "cosine", "warmup": 1000, "lr_floor": 0.1,
                  "steps": 30_000, "batch_size": 16, "betas": [0.9, 0.95], "weight_decay": 1e-10,
                  "grad_clip": 1.0, "lora_rank": 16},
    },
    "paper_pi05": {  # openpi-ROCKET/src/openpi/training/config.py: pi05_libero_align10_rocket_64bsz
        "vla": "2,3,4,5,6,7,8,9,10,-1", "vggt": "2,4,6,8,10,12,14,16,18,-1",
        "trainer": "pytorch", "lambda": 0.5, "share": True, "matryoshka": True,
        "hidden": 2 * 1024,  # openpi-ROCKET/src/openpi/models_pytorch/projectors.py
        "student": "pi05", "chunk": 10, "discrete_state": False,  # Pi0Config(action_horizon=10, ...)
        "teacher_dtype": "auto",  # scripts/train_pytorch_ROCKET.py: fp32 VGGT under bf16 autocast
    },
}
STUDENT_DEPTH = {"oft": 32, "pi0": 18, "pi05": 18}


def student_index(official: int, trainer: str, depth: int) -> tuple[int, bool]:
    """Our hidden-state index (after block k) and whether it is read after the final norm.

    * openvla-tuple: transformers' hidden_states tuple; its -1 was block 31 in the official
      run (the "openvla-official" check of docs/students.md), other k carry over.
    * jax (openpi-ROCKET/src/openpi/models/gemma.py): the scanned block returns its output,
      so k -> k + 1 and -1 -> the last block's output before the final norm.
    * pytorch (openpi-ROCKET/src/openpi/models_pytorch/gemma_pytorch.py): all_hidden_states[k]
      is the input of block k, so k -> k; -1 is appended after the final norm.
    """
    if trainer == "openvla-tuple":
        return (depth - 1 if official == -1 else official), False
    if trainer == "jax":
        return (depth if official == -1 else official + 1), False
    return (depth, True) if official == -1 else (official, False)


def teacher_index(official: int) -> int:
    """VGGT's aggregator returns block outputs: 0-based k -> our k + 1, -1 -> 24."""
    return 24 if official == -1 else official + 1


def official_widths(hidden: int, n: int) -> list[int]:
    """AlignProjector's widths, term for term."""
    ratios = [0.2 + 0.8 * i / max(n - 1, 1) for i in range(n)]
    return [max(1, int(hidden * r)) for r in ratios]


def _config(name: str) -> TrainConfig:
    from rocket_vla.commands.train import DESCRIPTION

    cfg, _ = parse_config(build_parser(TrainConfig, "rocket train", DESCRIPTION), TrainConfig,
                          ["--config", name])
    return cfg


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_preset_pairs_widths_and_lambda_equal_the_official_run(name: str) -> None:
    off = OFFICIAL[name]
    cfg = _config(name)
    depth = STUDENT_DEPTH[off["student"]]
    students = [student_index(int(k), off["trainer"], depth) for k in off["vla"].split(",")]
    assert cfg.student == off["student"]
    assert cfg.student_layers == [k for k, _ in students]
    assert cfg.teacher_layers == [teacher_index(int(k)) for k in off["vggt"].split(",")]
    assert cfg.align_weight == off["lambda"] and cfg.variant == "rocket"  # shared + Matryoshka
    assert cfg.projector_hidden == off["hidden"]
    assert cfg.teacher_dtype == off["teacher_dtype"]
    for key, value in off.get("optim", {}).items():
        assert cfg.to_dict()[key] == value, key
    # what the trainer builds from it, with a VGGT-1B-shaped teacher (2048-wide, 24 blocks)
    align = AlignConfig.preset(cfg.variant, student_dim=2048, teacher_dim=2048, student_depth=depth,
                               teacher_depth=24, student_layers=cfg.student_layers,
                               teacher_layers=cfg.teacher_layers, hidden_dim=cfg.projector_hidden)
    assert align.projector == "shared" and align.matryoshka == off["matryoshka"]
    assert align.widths() == official_widths(off["hidden"], 10)
    assert align.widths() == [409, 591, 773, 955, 1137, 1319, 1501, 1683, 1865, 2048]


def test_final_norm_question_per_student() -> None:
    """OpenVLA / pi0: the last pair is read before any final norm; pi0.5 after it."""
    assert [student_index(-1, t, 18)[1] for t in ("jax", "pytorch")] == [False, True]
    pi0 = build_student("pi0", "tiny")
    assert pi0.final_path.endswith("language_model.norm")  # taps read the norm's INPUT
    pi05 = build_student("pi05", "tiny")
    assert pi05.final_path == "final_tap"  # an identity fed with the norm's OUTPUT


def test_layouts_and_spatial_forcing_layers_follow_the_trainers() -> None:
    for layout, trainer, depth in (("openvla-official", "openvla-tuple", 32), ("pi0", "jax", 18),
                                   ("pi05", "pytorch", 18)):
        vla = OFFICIAL["paper_openvla" if layout.startswith("openvla") else "paper_pi0"]["vla"]
        vla = [student_index(int(k), trainer, depth)[0] for k in vla.split(",")]
        assert PAPER_PAIRS[layout] == (vla, [3, 5, 7, 9, 11, 13, 15, 17, 19, 24])
    # Spatial Forcing: openvla "24" (run_align1_spatial_forcing.sh), openpi "12" (config.py)
    assert PAPER_SF_LAYER["openvla-official"] == student_index(24, "openvla-tuple", 32)[0]
    assert PAPER_SF_LAYER["pi0"] == student_index(12, "jax", 18)[0] == 13
    assert PAPER_SF_LAYER["pi05"] == student_index(12, "pytorch", 18)[0] == 12


def test_trainer_builds_the_pi05_preset_with_its_student_settings() -> None:
    cfg = _config("paper_pi05")
    assert (cfg.lora_rank, cfg.schedule, cfg.warmup, cfg.lr, cfg.lr_floor) == (0, "cosine", 1000, 2.5e-5, 0.1)
    student = build_student(cfg.student, "tiny", **cfg.student_config)
    assert student.chunk == OFFICIAL["paper_pi05"]["chunk"]
    assert student.config.discrete_state is OFFICIAL["paper_pi05"]["discrete_state"]
    teacher = SimpleNamespace(dim=2048, num_layers=24)
    align = build_align_config(cfg, student, teacher)
    assert align.student_layers == [2, 3, 4, 5, 6, 7, 8, 9, 10, 18] and align.weight == 0.5
    assert align.hidden_dim == 2048 and align.pos_embed == "vggt-uv"
    # the pairs are the preset's: a student carries no alignment settings of its own
    plain = build_align_config(TrainConfig(student="pi05"), student, teacher)
    assert len(plain.student_layers) == TrainConfig().num_pairs and plain.pos_embed == "sincos"


def test_matryoshka_widths_are_computed_as_the_official_code() -> None:
    for hidden in (2048, 1000, 64, 7):
        for n in range(1, 13):
            assert matryoshka_widths(hidden, n) == official_widths(hidden, n), (hidden, n)
    assert matryoshka_widths(1000, 11)[9] == 919  # int() truncation, not 920
    assert matryoshka_widths(2048, 1) == [409]  # a single shared pair: 20%, as the official code


def test_projector_hidden_default_is_the_official_two_times_vggt_width() -> None:
    """AlignProjector(hidden_dim=None) -> 2 * vggt_dim = the teacher width, for every student."""
    for student_dim in (4096, 2048, 64):
        cfg = AlignConfig.preset("rocket", student_dim=student_dim, teacher_dim=2048, layout="pi0")
        assert cfg.hidden_dim == 2048
        assert Aligner(cfg).projectors.projector(0).fc1.out_features == 2048


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_teacher_precision_default_is_float32_weights_under_autocast() -> None:
    """Default dtype "auto" = float32 weights on every device (the official recipe runs them under
    bf16 autocast); bf16 weights are an opt-in and measurably further from float32."""
    tiny = VGGTConfig.tiny()
    assert TeacherRuntime().dtype == "auto"
    official = VGGTTeacher(tiny, TeacherInput(autocast="bfloat16"), seed=0)
    assert official.compute_dtype() == torch.float32
    assert {p.dtype for p in official.model.parameters()} == {torch.float32}
    full = VGGTTeacher(tiny, TeacherInput(autocast="off"), seed=0)
    low = VGGTTeacher(tiny, TeacherInput(autocast="off"), seed=0, runtime=TeacherRuntime(dtype="bfloat16"))
    frames = torch.rand(2, 2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    layers = [1, 2, 3, 4]
    ref = full.features(frames, layers)
    autocast_err = max(_rel(a, r) for a, r in zip(official.features(frames, layers), ref, strict=True))
    bf16_err = max(_rel(a, r) for a, r in zip(low.features(frames, layers), ref, strict=True))
    print(f"teacher vs float32: autocast {autocast_err:.2e}, bf16 weights {bf16_err:.2e}")
    assert 0 < autocast_err < bf16_err


def test_bf16_teacher_weights_are_an_explicit_opt_in() -> None:
    common = dict(kind="vggt-random", vggt_size="tiny", input_size=56)
    default = build_teacher(TeacherConfig(**common))
    assert {p.dtype for p in default.model.parameters()} == {torch.float32}
    low = build_teacher(TeacherConfig(**common, dtype="bfloat16"))
    assert {p.dtype for p in low.model.parameters()} == {torch.bfloat16}
    with pytest.raises(RocketError, match="teacher dtype 'bf16' is unknown"):
        build_teacher(TeacherConfig(**common, dtype="bf16"))


def test_teacher_dtype_of_a_run_reaches_its_teacher() -> None:
    """``--teacher_dtype bfloat16`` (the official JAX pi0 run) gives bf16 teacher weights; the
    bundled tiny teacher keeps float32 and says so."""
    from rocket_vla.teachers.build import teacher_from_spec

    low = teacher_from_spec("random-tiny", 28, dtype="bfloat16")
    assert {p.dtype for p in low.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in teacher_from_spec("random-tiny", 28).model.parameters()} == {torch.float32}
    with pytest.raises(RocketError, match="keeps its float32 weights; drop --teacher_dtype bfloat16"):
        teacher_from_spec("tiny", 28, dtype="bfloat16")
    with pytest.raises(RocketError, match="unknown teacher_dtype 'bf16'"):
        TrainConfig(dataset="x", teacher_dtype="bf16").validate()
