"""The Student interface through MiniVLA: registry, LoRA (PEFT), gradient checkpointing,
checkpoints, all through the real trainer."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
from minivla_fixtures import ConvTeacher, make_episodes, single_thread, tiny_config

from rocket_vla.align import LayerTaps
from rocket_vla.errors import RocketError
from rocket_vla.policies import MiniVLA, MiniVLAConfig, apply_lora, build_student, load_student
from rocket_vla.policies.student import student_class
from rocket_vla.train import Trainer


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _batch(student: MiniVLA, b: int = 2) -> dict:
    g = torch.Generator().manual_seed(1)
    size = student.image_size
    return {"images": torch.rand(b, 2, 3, size, size, generator=g),
            "proprio": torch.randn(b, 8, generator=g),
            "instructions": ["pick up the black bowl", "open the top drawer"][:b],
            "actions": torch.randn(b, student.chunk, 7, generator=g).clamp(-1, 1),
            "action_mask": torch.ones(b, student.chunk, dtype=torch.bool)}


def test_registry_builds_minivla_and_refuses_unknown_kinds() -> None:
    torch.manual_seed(0)
    built = build_student("minivla", "tiny")
    torch.manual_seed(0)
    direct = MiniVLA(MiniVLAConfig.preset("tiny"))
    assert student_class("minivla") is MiniVLA
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(),
                                                 direct.state_dict().values(), strict=True))
    assert (built.depth, built.width, built.image_grid, built.chunk) == (4, 32, (4, 4), 8)
    with pytest.raises(RocketError, match="unknown student 'gpt'"):
        build_student("gpt")
    with pytest.raises(RocketError, match="no pretrained weights"):
        build_student("minivla", "tiny", path="/nonexistent")
    again = MiniVLA.from_config(json.loads(json.dumps(built.config_dict())))
    assert again.config == built.config


def test_interface_loss_is_the_masked_l1_of_the_forward() -> None:
    student = build_student("minivla", "tiny").eval()
    batch = _batch(student)
    batch["action_mask"][1, 5:] = False
    inputs = student.prepare(batch)
    pred = student(batch["images"], batch["proprio"], student.config.tokenize(batch["instructions"]))
    err = (pred - batch["actions"]).abs().mean(-1)  # [B, chunk]
    reference = err[batch["action_mask"]].mean()
    torch.testing.assert_close(student.action_loss(inputs), reference)
    torch.testing.assert_close(student.predict(inputs), pred)
    assert student.visual_index(inputs) == [(0, 32)]


def test_lora_taps_see_the_adapted_blocks() -> None:
    """Taps on the LoRA-wrapped student == taps on a plain MiniVLA whose weights are merged by
    hand (W + B A * alpha / r): the blocks path survives the wrapping and the adapters act."""
    torch.manual_seed(0)
    student = build_student("minivla", "tiny").eval()
    apply_lora(student, rank=4, alpha=8.0)
    with torch.no_grad():
        for name, p in student.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # PEFT starts B at zero; make the adapters do something
    merged = MiniVLA(student.config).eval()
    own = student.state_dict()
    state = {}
    for key in merged.state_dict():
        module, _, leaf = key.rpartition(".")
        if f"{module}.base_layer.{leaf}" in own:
            w = own[f"{module}.base_layer.{leaf}"]
            if leaf == "weight":
                w = w + own[f"{module}.lora_B.default.weight"] @ own[f"{module}.lora_A.default.weight"] * 2.0
            state[key] = w
        else:
            state[key] = own[key]
    merged.load_state_dict(state)
    inputs = student.prepare(_batch(student))
    captured = []
    for model in (student, merged):
        with torch.no_grad(), LayerTaps(model, model.blocks_path, [1, 2, 4], final=model.final_path) as taps:
            taps.use_tokens(model.visual_index(inputs))
            model.predict(inputs)
            captured.append([s.clone() for s in taps.states])
    for a, b in zip(*captured, strict=True):
        assert a.shape == (2, 32, 32)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_lora_training_moves_only_adapters_aligner_and_head(tmp_path) -> None:
    trainer = Trainer(tiny_config(tmp_path, steps=3, lora_rank=4, save_every=3),
                      episodes=make_episodes(), teacher=ConvTeacher())
    model = trainer.accelerator.unwrap_model(trainer.model)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    full = ("policy.proprio_embed", "policy.action_queries", "policy.norm.", "policy.action_head")
    assert trainable == {n for n, _ in model.named_parameters()
                         if "lora_" in n or n.startswith(full) or n.startswith("aligner.")}
    assert any("lora_A" in n for n in trainable) and any(n.startswith("aligner.") for n in trainable)
    trainer.fit()
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k in trainable for k in moved)  # frozen base weights are bit-identical
    assert any("lora_B" in k for k in moved) and any(k.startswith("policy.action_head") for k in moved)
    assert any(k.startswith("aligner.") for k in moved)
    assert not any(".base_layer." in k or k.startswith("policy.patch_embed") for k in moved)

    # save -> load -> identical actions, with the adapters rebuilt from the recorded settings
    loaded, saved = load_student(tmp_path / "run")
    assert saved["student"]["lora"] == {"rank": 4, "alpha": 4.0}
    inputs = loaded.prepare(_batch(loaded))
    torch.testing.assert_close(loaded.predict(inputs), trainer.policy.eval().predict(inputs))


def test_gradient_checkpointing_changes_nothing_but_memory(tmp_path) -> None:
    runs = []
    for flag in (False, True):
        trainer = Trainer(tiny_config(tmp_path / str(flag), steps=2, gradient_checkpointing=flag),
                          episodes=make_episodes(), teacher=ConvTeacher())
        assert trainer.policy.checkpointing is flag
        runs.append(trainer.fit().history)
    for a, b in zip(*runs, strict=True):
        assert a["total"] == pytest.approx(b["total"], abs=1e-6)
        assert a["pairs"] == pytest.approx(b["pairs"], abs=1e-6)


def test_resume_refuses_another_student_architecture(tmp_path) -> None:
    Trainer(tiny_config(tmp_path, steps=1, variant="baseline"), episodes=make_episodes(n=2)).fit()
    with pytest.raises(RocketError, match="changed hyper-parameters"):
        Trainer(tiny_config(tmp_path, steps=2, variant="baseline", student_preset="demo"),
                episodes=make_episodes(n=2), resume=tmp_path / "run")


def test_alignment_settings_come_from_the_config_not_the_student() -> None:
    from types import SimpleNamespace

    from rocket_vla.align.config import PAPER_PAIRS
    from rocket_vla.train.config import TrainConfig
    from rocket_vla.train.loop import build_align_config

    student = build_student("minivla", "tiny", depth=18)
    vggt = SimpleNamespace(dim=24, num_layers=24)
    plain = build_align_config(TrainConfig(num_pairs=4), student, vggt)
    assert plain.weight == 0.5 and len(plain.student_layers) == 4  # balanced selection
    assert plain.pos_embed == "sincos"
    students, teachers = PAPER_PAIRS["pi0"]  # what --config paper_pi0 sets
    paper = build_align_config(TrainConfig(student_layers=students, teacher_layers=teachers,
                                           align_weight=0.125), student, vggt)
    assert (paper.student_layers, paper.teacher_layers, paper.weight) == (students, teachers, 0.125)
    sf = build_align_config(TrainConfig(variant="spatial_forcing"), student, vggt)
    assert sf.student_layers == [round(0.75 * 18)] and sf.teacher_layers == [24]


def test_bf16_autocast_runs_the_student_in_bf16_and_stays_close(tmp_path) -> None:
    runs = []
    for precision in ("no", "bf16"):
        trainer = Trainer(tiny_config(tmp_path / precision, steps=2, precision=precision),
                          episodes=make_episodes(), teacher=ConvTeacher())
        runs.append(trainer.fit().history)
    for full, half in zip(*runs, strict=True):
        assert full["total"] != half["total"]  # autocast really changed the arithmetic
        assert half["total"] == pytest.approx(full["total"], rel=0.05)
