"""pi0 through transformers as a Student: what is pi0's own (inputs, loss, weights, presets); the
checks every student passes are in test_student_conformance.py.

Every test builds a real ``PI0ForConditionalGeneration`` from the ``pi0-tiny`` config; the
references are transformers itself (its ``hidden_states``, its velocity prediction) or
plain formulas.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from minivla_fixtures import single_thread

from rocket_vla.errors import RocketError
from rocket_vla.policies.paligemma import OPENPI_LIBERO_REPLAN_STEPS
from rocket_vla.policies.pi0 import PI0Student
from rocket_vla.policies.prompt import BOS_ID, NEWLINE_ID
from rocket_vla.policies.student import build_student

INSTRUCTIONS = ["pick up the black bowl next to the plate and place it on the plate",
                "open the top drawer of the cabinet"]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _student(seed: int = 0, **overrides) -> PI0Student:
    torch.manual_seed(seed)
    student = build_student("pi0", "tiny", **overrides)
    assert isinstance(student, PI0Student)
    return student


def _batch(student: PI0Student, b: int = 2, size: int | None = None, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    size = size or student.image_size
    mask = torch.ones(b, student.chunk, dtype=torch.bool)
    mask[-1, -3:] = False  # the last sample's episode ends inside the chunk
    return {
        "images": torch.rand(b, student.num_cameras, 3, size, size, generator=g),
        "proprio": torch.randn(b, 8, generator=g),
        "instructions": INSTRUCTIONS[:b],
        "actions": torch.randn(b, student.chunk, 7, generator=g),
        "action_mask": mask,
        # fixed flow-matching draws make a repeated batch exactly repeatable
        "noise": torch.randn(b, student.chunk, student.model.config.max_action_dim, generator=g),
        "timestep": torch.rand(b, generator=g) * 0.9 + 0.05,
    }


def test_inputs_follow_the_model_config() -> None:
    student = _student()
    cfg = student.model.config
    assert (student.depth, student.width, student.image_grid, student.chunk) == (18, 64, (4, 4), 10)
    assert student.default_execute == OPENPI_LIBERO_REPLAN_STEPS == 5
    inputs = student.prepare(_batch(student, size=96))  # resized to the vision tower's 64 px
    assert inputs["pixel_values"].shape == (2, 2, 3, 64, 64)
    assert float(inputs["pixel_values"].min()) >= -1.0 and float(inputs["pixel_values"].max()) <= 1.0
    assert inputs["state"].shape == (2, cfg.max_state_dim) and inputs["state"][:, 8:].abs().sum() == 0
    assert inputs["actions"].shape == (2, 10, cfg.max_action_dim)
    assert inputs["actions"][..., 7:].abs().sum() == 0
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    n_image = 2 * 16
    image_id = cfg.vlm_config.image_token_id
    assert (ids[:, :n_image] == image_id).all() and not (ids[:, n_image:] == image_id).any()
    # PI0Processor's layout: images, BOS, instruction, newline, right padding
    assert (ids[:, n_image] == BOS_ID).all()
    words = [len(t.split()) for t in INSTRUCTIONS]
    for row, n in enumerate(words):
        assert ids[row, n_image + 1 + n] == NEWLINE_ID
        assert mask[row].sum() == n_image + n + 2
    assert student.visual_index(inputs) == [(0, n_image)]
    # openpi's LoRA recipe adapts both Gemmas: the PaliGemma blocks and the action expert
    targets = student.lora_targets()
    assert any(t.startswith(student.blocks_path) for t in targets)
    assert any(t.startswith("model.model.dit.layers.") for t in targets)


def test_visual_index_is_read_from_the_config_image_token() -> None:
    """A different image-token id moves nothing by hand: the prompt and the index follow it."""
    torch.manual_seed(0)
    student = PI0Student.build("tiny")
    cfg = dict(student.config_dict())
    cfg["model"] = {**cfg["model"], "vlm_config": {**cfg["model"]["vlm_config"], "image_token_id": 777}}
    other = PI0Student.from_config(cfg)
    inputs = other.prepare(_batch(other))
    assert (inputs["input_ids"] == 777).sum() == 2 * 32
    assert other.visual_index(inputs) == [(0, 32)]
    # a wrong image-token count is reported, not tapped
    broken = dict(inputs, input_ids=inputs["input_ids"].clone())
    broken["input_ids"][0, 3] = 5
    with pytest.raises(RocketError, match="image tokens per sample"):
        other.visual_index(broken)


def test_action_loss_is_the_library_loss_over_real_dims_and_valid_steps() -> None:
    student = _student().eval()
    inputs = student.prepare(_batch(student))
    loss = student.action_loss(inputs)
    # reference: transformers' own velocity prediction, target noise - actions, by formula
    t = inputs["timestep"][:, None, None]
    noisy = t * inputs["noise"] + (1 - t) * inputs["actions"]
    out = student.model(state=inputs["state"], noise=noisy, timestep=inputs["timestep"],
                        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        pixel_values=inputs["pixel_values"],
                        pixel_attention_mask=inputs["pixel_attention_mask"])
    err = (inputs["noise"] - inputs["actions"] - out.logits)[..., :7] ** 2
    valid = inputs["action_mask"]
    expected = err[valid].mean()
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-6)
    # with every dim real and every step valid it is exactly the library's mean reduction
    student.model.config.loss_reduction = "mean"
    full = student.model(state=inputs["state"], input_ids=inputs["input_ids"],
                         attention_mask=inputs["attention_mask"], pixel_values=inputs["pixel_values"],
                         pixel_attention_mask=inputs["pixel_attention_mask"], actions=inputs["actions"],
                         noise=inputs["noise"], timestep=inputs["timestep"]).loss
    student.model.config.loss_reduction = "none"
    student.action_dim = student.model.config.max_action_dim
    every_step = dict(inputs, action_mask=torch.ones_like(valid))
    assert torch.allclose(student.action_loss(every_step), full, rtol=1e-5)


def test_local_checkpoint_loads_offline_and_needs_its_tokenizer(tmp_path: Path) -> None:
    student = _student(seed=2)
    student.model.save_pretrained(tmp_path / "pi0")
    with pytest.raises(RocketError, match="tokenizer"):
        PI0Student.build(path=str(tmp_path / "pi0"))  # no tokenizer files next to the weights
    loaded = PI0Student.build(path=str(tmp_path / "pi0"), tokenizer="words", max_text_len=24)
    assert loaded.config.student_path == str(tmp_path / "pi0")
    own, other = student.model.state_dict(), loaded.model.state_dict()
    assert own.keys() == other.keys() and all(torch.equal(own[k], other[k]) for k in own)
    with pytest.raises(RocketError, match="student_path"):
        PI0Student.build(path=str(tmp_path / "missing"), tokenizer="words")
    # with tokenizer files next to the weights, the checkpoint's own tokenizer builds the prompt
    _word_level_tokenizer().save_pretrained(tmp_path / "pi0")
    with_tokenizer = PI0Student.build(path=str(tmp_path / "pi0"), max_text_len=8)
    assert with_tokenizer.config.tokenizer == "checkpoint"
    inputs = with_tokenizer.prepare(dict(_batch(student), instructions=["open the top drawer"] * 2))
    assert inputs["input_ids"][0, 32:].tolist() == [2, 5, 6, 7, 8, 4, 0, 0]  # bos, words, "\n", pad
    assert inputs["attention_mask"][0, 32:].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]


def _word_level_tokenizer():
    """A real (tokenizers-backed) tokenizer built offline: the ids a checkpoint's would give."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "<bos>", "<unk>", "\n", "open", "the", "top", "drawer"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="removed")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def test_bad_batches_name_the_fix() -> None:
    student = _student()
    batch = _batch(student)
    with pytest.raises(RocketError, match="chunk=10"):
        student.prepare(dict(batch, actions=torch.zeros(2, 8, 7)))
    with pytest.raises(RocketError, match="one RGB image per camera"):
        student.prepare(dict(batch, images=batch["images"][:, :1]))
    with pytest.raises(RocketError, match="gradient checkpointing"):
        student.enable_gradient_checkpointing()
    with pytest.raises(RocketError, match="execute"):
        build_student("pi0", "tiny", execute=11)


def test_base_preset_is_the_real_pi0_layout() -> None:
    """transformers' default pi0 (built on the meta device: shapes only, no memory)."""
    with torch.device("meta"):
        student = build_student("pi0", "base")
    assert (student.depth, student.width, student.image_size, student.image_grid) == (18, 2048, 224, (16, 16))
    assert student.chunk == 50
    assert 3.4e9 < student.num_parameters() < 3.6e9  # PaliGemma-3B + the 300M action expert


def test_bf16_autocast_and_bf16_weights_follow_the_float32_result() -> None:
    student = _student().eval()
    batch = _batch(student)  # fixed noise and time: the three losses see the same draw
    reference = student.action_loss(student.prepare(batch))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = student.action_loss(student.prepare(batch))
    student.to(torch.bfloat16)
    inputs = student.prepare(batch)
    assert inputs["pixel_values"].dtype == inputs["state"].dtype == torch.bfloat16
    low = student.action_loss(inputs)
    low.backward()
    assert student.model.action_out_proj.weight.grad.dtype == torch.bfloat16
    torch.manual_seed(0)
    actions = student.predict(inputs)
    assert actions.dtype == torch.float32 and torch.isfinite(actions).all()
    for loss in (mixed, low):
        assert loss.dtype == torch.float32
        assert torch.allclose(loss, reference, rtol=0.05), (loss, reference)
