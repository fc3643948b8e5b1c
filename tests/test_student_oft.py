"""The OFT-style student on real transformers VLMs built from tiny configs (no mocks).

Architectures: SmolVLM (Idefics3 code: SigLIP-style encoder, pixel shuffle, Llama), PaliGemma
(SigLIP, Gemma prefix LM), Llava (CLIP, Llama) and Qwen2.5-VL (flat merged patches, M-RoPE,
image runs wrapped in vision start/end tokens, so the image tokens are a [B, T] index).
References: transformers' own ``hidden_states``, the model's own image-token id, plain loops
and formulas.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from minivla_fixtures import single_thread

from rocket_vla.align import LayerTaps
from rocket_vla.errors import RocketError
from rocket_vla.policies.oft import OFT_PRESETS, OFTStudent
from rocket_vla.policies.student import build_student

ALL = ["smolvlm-tiny", "paligemma-tiny", "llava-tiny", "qwen2.5-vl-tiny"]
INSTRUCTIONS = ["put the bowl on the stove", "open the middle drawer of the cabinet"]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _student(preset: str, seed: int = 0, **overrides) -> OFTStudent:
    torch.manual_seed(seed)
    student = build_student("oft", preset, **overrides)
    assert isinstance(student, OFTStudent)
    return student


def _batch(student: OFTStudent, b: int = 2, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, student.chunk, dtype=torch.bool)
    mask[-1, -2:] = False
    return {
        "images": torch.rand(b, student.num_cameras, 3, student.image_size, student.image_size, generator=g),
        "proprio": torch.randn(b, 8, generator=g),
        "instructions": INSTRUCTIONS[:b],
        "actions": torch.randn(b, student.chunk, 7, generator=g).clamp(-1, 1),
        "action_mask": mask,
    }


@pytest.mark.parametrize("preset", ALL)
def test_image_tokens_come_from_the_model_config(preset: str) -> None:
    student = _student(preset)
    cfg = student.vlm.config
    inputs = student.prepare(_batch(student))
    n = student.tokens_per_image * 2
    ids = inputs["input_ids"]
    assert int((ids == cfg.image_token_id).sum()) == 2 * n
    index = student.visual_index(inputs)
    positions = (ids[0] == cfg.image_token_id).nonzero().flatten()
    if isinstance(index, torch.Tensor):  # image runs wrapped in other tokens: a [B, T] index
        assert index.shape == (2, n) and torch.equal(index[1], positions) and preset == "qwen2.5-vl-tiny"
    else:
        assert index == [(0, n)] and torch.equal(positions, torch.arange(n))
    assert student.blocks_path.endswith(".layers") and student.depth == 6 and student.width == 64
    # the count per image is what the model's vision path produces: run it and compare
    pixels = {k: v for k, v in inputs["model"].items() if k.startswith(("pixel_values", "image_grid"))}
    feats = student.vlm.model.get_image_features(**pixels)
    feats = getattr(feats, "pooler_output", feats)
    parts = feats if isinstance(feats, (list, tuple)) else [feats]
    per_image = sum(f.reshape(-1, f.shape[-1]).shape[0] for f in parts) // 4  # 2 samples x 2 cameras
    assert per_image == student.tokens_per_image == student.image_grid[0] * student.image_grid[1]


@pytest.mark.parametrize("preset", ["smolvlm-tiny", "paligemma-tiny", "qwen2.5-vl-tiny"])
def test_image_grid_is_row_major_per_camera(preset: str) -> None:
    """With no vision blocks the stream entering the LM is local: editing one grid cell of
    camera 1 moves exactly that cell's token (pixel shuffle / patch merging included)."""
    cfg = json.loads(json.dumps(OFT_PRESETS[preset]))
    if preset.startswith("qwen"):
        cfg["vision_config"].update(depth=0, fullatt_block_indexes=[])
    else:
        cfg["vision_config"]["num_hidden_layers"] = 0
    torch.manual_seed(0)
    student = OFTStudent.from_config({"vlm": cfg, "image_size": 64 if preset.startswith("qwen") else None})
    student.eval()
    batch = _batch(student, b=1)
    rows, cols = student.image_grid
    cell = student.image_size // rows
    inputs = student.prepare(batch)
    edited = dict(batch, images=batch["images"].clone())
    row, col = 2, 1
    edited["images"][0, 1, :, row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] += 0.3
    index = student.visual_index(inputs)
    spans = None if isinstance(index, torch.Tensor) else index
    with LayerTaps(student, student.blocks_path, [0], spans=spans) as taps:
        if spans is None:
            taps.token_index = index
        student.predict(inputs)
        before = taps.states[0].clone()
        student.predict(student.prepare(edited))
        after = taps.states[0]
    changed = (after - before).abs().sum(-1)[0].nonzero().flatten().tolist()
    assert changed == [student.tokens_per_image + row * cols + col]


@pytest.mark.parametrize("preset", ALL[1:])  # the default, smolvlm-tiny: test_student_conformance
def test_taps_equal_transformers_hidden_states_on_image_tokens(preset: str) -> None:
    student = _student(preset).eval()
    inputs = student.prepare(_batch(student))
    index = student.visual_index(inputs)
    indices = list(range(student.depth + 1))
    spans = None if isinstance(index, torch.Tensor) else index
    with LayerTaps(student, student.blocks_path, indices, spans=spans, final=student.final_path) as taps:
        if spans is None:
            taps.token_index = index
        student.action_loss(inputs)
        states = taps.states
    # reference: the same sequence through transformers with output_hidden_states
    b = inputs["input_ids"].shape[0]
    student._inject = torch.cat([student.proprio_proj(inputs["proprio"])[:, None],
                                 student.action_queries.expand(b, -1, -1)], 1)
    try:
        ref = student.vlm.model(**inputs["model"], output_hidden_states=True).hidden_states
    finally:
        student._inject = None
    # the image tokens by a plain per-sample loop over the model's own image-token id
    image_id = student.vlm.config.image_token_id

    def images_of(stream: torch.Tensor) -> torch.Tensor:
        return torch.stack([stream[i][inputs["input_ids"][i] == image_id] for i in range(b)])

    assert len(ref) == student.depth + 1
    for k in indices[:-1]:
        assert torch.equal(states[k], images_of(ref[k])), k
    norm = student.get_submodule(student.final_path)
    assert torch.allclose(norm(states[-1]), images_of(ref[-1]), atol=1e-5)


@pytest.mark.parametrize("preset", ALL)
def test_queries_read_the_prompt_and_proprio(preset: str) -> None:
    """The proprio token and the instruction reach the actions; padding does not."""
    student = _student(preset).eval()
    batch = _batch(student)
    base = student.predict(student.prepare(batch))
    moved = student.predict(student.prepare(dict(batch, proprio=batch["proprio"] + 1.0)))
    other = student.predict(student.prepare(dict(batch, instructions=["close the drawer"] * 2)))
    assert base.shape == (2, 8, 7)
    assert not torch.allclose(base, moved) and not torch.allclose(base, other)
    longer = dict(batch, instructions=INSTRUCTIONS)
    student.config.max_text_len = 30  # more padding inside the prompt: same actions
    padded = student.predict(student.prepare(longer))
    assert torch.allclose(base, padded, atol=1e-5)


def test_gradient_checkpointing_keeps_taps_and_gradients() -> None:
    student = _student("smolvlm-tiny").train()
    inputs = student.prepare(_batch(student))
    span = student.visual_index(inputs)

    def run() -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        student.zero_grad()
        with LayerTaps(student, student.blocks_path, [1, 3, student.depth], spans=span,
                       final=student.final_path) as taps:
            loss = student.action_loss(inputs)
            states = [s.detach().clone() for s in taps.states]
            (loss + sum(s.square().mean() for s in taps.states)).backward()
        return states, {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}

    plain_states, plain_grads = run()
    student.enable_gradient_checkpointing()
    ckpt_states, ckpt_grads = run()
    assert all(torch.equal(a, b) for a, b in zip(plain_states, ckpt_states, strict=True))
    assert plain_grads.keys() == ckpt_grads.keys()
    for name, grad in plain_grads.items():
        assert torch.allclose(grad, ckpt_grads[name], atol=1e-6), name


def test_action_loss_is_masked_l1() -> None:
    student = _student("paligemma-tiny").eval()
    inputs = student.prepare(_batch(student))
    pred = student.predict(inputs)
    err = (pred - inputs["actions"]).abs().mean(-1)  # per step
    valid = inputs["action_mask"]
    expected = err[valid].mean()
    assert torch.allclose(student.action_loss(inputs), expected, atol=1e-6)


def test_local_checkpoint_and_errors(tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText

    student = _student("paligemma-tiny", seed=2)
    full = AutoModelForImageTextToText.from_config(student.vlm.config)
    full.load_state_dict(student.vlm.state_dict(), strict=False)  # all but the (tied) LM head
    full.save_pretrained(tmp_path / "vlm")
    (tmp_path / "vlm" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.4, 0.5, 0.6], "image_std": [0.2, 0.3, 0.4]}))
    with pytest.raises(RocketError, match="tokenizer"):
        OFTStudent.build(path=str(tmp_path / "vlm"))
    loaded = OFTStudent.build(path=str(tmp_path / "vlm"), tokenizer="words")
    own, other = student.vlm.state_dict(), loaded.vlm.state_dict()
    assert own.keys() == other.keys() and all(torch.equal(own[k], other[k]) for k in own)
    assert loaded.config.image_mean == [0.4, 0.5, 0.6]
    images = torch.full((1, 2, 3, 64, 64), 0.5)
    batch = {"images": images, "proprio": torch.zeros(1, 8), "instructions": ["x"]}
    pixels = loaded.prepare(batch)["model"]["pixel_values"]
    expected = (0.5 - torch.tensor([0.4, 0.5, 0.6])) / torch.tensor([0.2, 0.3, 0.4])
    assert torch.allclose(pixels[0, :, 0, 0], expected)
    with pytest.raises(RocketError, match="knows the image layout"):
        OFTStudent.from_config({"vlm": {"model_type": "gemma3"}})
    with pytest.raises(RocketError, match="unknown OFT preset"):
        build_student("oft", "huge")
    with pytest.raises(RocketError, match="chunk=8"):
        student.prepare(dict(_batch(student), actions=torch.zeros(2, 5, 7)))


def test_bf16_autocast_and_bf16_weights_follow_the_float32_result() -> None:
    student = _student("qwen2.5-vl-tiny").eval()
    batch = _batch(student)
    reference = student.action_loss(student.prepare(batch))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = student.action_loss(student.prepare(batch))
    student.to(torch.bfloat16)
    inputs = student.prepare(batch)
    assert inputs["model"]["pixel_values"].dtype == torch.bfloat16
    low = student.action_loss(inputs)
    low.backward()
    assert student.action_queries.grad is not None and student.action_queries.grad.dtype == torch.bfloat16
    actions = student.predict(inputs)
    assert actions.dtype == torch.float32 and torch.isfinite(actions).all()
    for loss in (mixed, low):
        assert loss.dtype == torch.float32
        assert torch.allclose(loss, reference, rtol=0.05), (loss, reference)
