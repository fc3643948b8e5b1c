"""transformers-backed teachers at tiny sizes: token dropping, grids, index convention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rocket_vla.errors import RocketError
from rocket_vla.teachers.base import TeacherInput
from rocket_vla.teachers.hf import HFTeacher

transformers = pytest.importorskip("transformers")

COMMON = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)


def _dinov2() -> torch.nn.Module:
    return transformers.Dinov2Model(
        transformers.Dinov2Config(**COMMON, image_size=28, patch_size=14)
    )


def _dinov2_reg() -> torch.nn.Module:
    return transformers.Dinov2WithRegistersModel(
        transformers.Dinov2WithRegistersConfig(
            **COMMON, image_size=28, patch_size=14, num_register_tokens=4
        )
    )


def _dinov3() -> torch.nn.Module:
    return transformers.DINOv3ViTModel(
        transformers.DINOv3ViTConfig(**COMMON, image_size=32, patch_size=16, num_register_tokens=4)
    )


def _depth_anything() -> torch.nn.Module:
    backbone = transformers.Dinov2Config(
        **COMMON, image_size=28, patch_size=14, out_indices=[1, 2, 3]
    )
    return transformers.DepthAnythingForDepthEstimation(
        transformers.DepthAnythingConfig(
            backbone_config=backbone.to_dict(), neck_hidden_sizes=[8, 16, 32],
            reassemble_factors=[4, 2, 1], fusion_hidden_size=16, head_hidden_size=8,
            reassemble_hidden_size=32,
        )
    )


# (builder, model_type, special tokens, patch size)
CASES = {
    "dinov2": (_dinov2, 1, 14),
    "dinov2_with_registers": (_dinov2_reg, 5, 14),
    "dinov3_vit": (_dinov3, 5, 16),
    "depth_anything": (_depth_anything, 1, 14),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def saved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    model_type = request.param
    build, special, patch = CASES[model_type]
    torch.manual_seed(0)
    model = build().eval()
    path = tmp_path_factory.mktemp(model_type)
    model.save_pretrained(path)
    return model_type, model, path, special, patch


def test_token_counts_grid_and_hidden_state_convention(saved) -> None:
    model_type, model, path, special, patch = saved
    teacher = HFTeacher.from_pretrained(path)
    assert teacher.model_type == model_type and teacher.num_special == special
    assert teacher.num_layers == 3 and teacher.dim == 32 and teacher.patch_size == patch
    h, w = 2 * patch, 3 * patch
    assert teacher.patch_grid(h, w) == (2, 3)
    frames = torch.rand(2, 2, 3, h, w, generator=torch.Generator().manual_seed(0))
    feats = teacher.features(frames, [0, 2, -1])
    assert [tuple(f.shape) for f in feats] == [(2, 2, 2, 3, 32)] * 3

    # Same tensors as transformers' hidden_states[k] minus the special tokens.
    core = model.backbone if model_type == "depth_anything" else model
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = core(pixel_values=(frames.reshape(4, 3, h, w) - mean) / std,
                   output_hidden_states=True)
    hidden = out.hidden_states
    assert len(hidden) == 4 and hidden[0].shape[1] == special + 6
    for got, k in zip(feats, (0, 2, 3), strict=True):
        ref = hidden[k][:, special:].reshape(2, 2, 2, 3, 32)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_compute_stops_at_deepest_requested_layer(saved) -> None:
    _, _, path, _, patch = saved
    teacher = HFTeacher.from_pretrained(path)
    calls: list[int] = []
    handles = [b.register_forward_hook(lambda *_, i=i: calls.append(i))
               for i, b in enumerate(teacher.blocks, start=1)]
    try:
        teacher.features(torch.rand(1, 1, 3, patch, patch), [1])
        assert calls == [1]
        calls.clear()
        teacher.features(torch.rand(1, 1, 3, patch, patch), [0])
        assert calls == []
    finally:
        for h in handles:
            h.remove()
    # Hooks of the teacher itself are gone; a full forward still works afterwards.
    assert teacher.features(torch.rand(1, 1, 3, patch, patch), [-1])[0].shape == (1, 1, 1, 1, 32)


def test_preprocessor_normalisation_and_fingerprint(tmp_path: Path) -> None:
    model = _dinov2()
    model.save_pretrained(tmp_path)
    plain = HFTeacher.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]})
    )
    custom = HFTeacher.from_pretrained(tmp_path, TeacherInput(size=(28, 28)))
    assert custom.mean == (0.5, 0.5, 0.5)
    assert custom.fingerprint() != plain.fingerprint()
    assert custom.features(torch.rand(1, 1, 3, 40, 40), [1])[0].shape == (1, 1, 2, 2, 32)


def test_missing_directory_and_unsupported_model(tmp_path: Path) -> None:
    with pytest.raises(RocketError, match="no config.json"):
        HFTeacher.from_pretrained(tmp_path / "absent")
    vit = transformers.ViTModel(transformers.ViTConfig(**COMMON, image_size=28, patch_size=14))
    vit.save_pretrained(tmp_path / "vit")
    with pytest.raises(RocketError, match="support"):
        HFTeacher.from_pretrained(tmp_path / "vit")
