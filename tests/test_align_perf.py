"""The ROCKET hot path: compile-friendly, fused, cached and free of device syncs.

References are independent of the code under test: ``F.interpolate`` / ``F.grid_sample``
once per layer for the fused resampling, the eager loss for the compiled one, and patched
``Tensor`` methods (or CUDA's sync debug mode) for "nothing reads the device back".
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from rocket_vla.align import AlignConfig, Aligner, LayerTaps, sincos_pos_embed_2d
from rocket_vla.align.resample import crop_weights, pos_embed_table, resample_layers

transformers = pytest.importorskip("transformers")


def tiny_config(pairs: int = 3) -> AlignConfig:
    layers = list(range(1, pairs + 1))
    return AlignConfig.preset("rocket", student_dim=16, teacher_dim=8, hidden_dim=32,
                              student_layers=layers, teacher_layers=layers)


def loss_inputs(pairs: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    student = [torch.randn(2, 6, 16, generator=g, requires_grad=True) for _ in range(pairs)]
    teacher = [torch.randn(2, 6, 8, generator=g) for _ in range(pairs)]
    return student, teacher


# ------------------------------------------------------------------ reference resampling
def reference_full_frame(feats: torch.Tensor, grid: tuple[int, int], scale: float) -> torch.Tensor:
    """The plain way: add the embedding at the teacher grid, F.interpolate, flatten views."""
    b, s, h, w, c = feats.shape
    maps = feats.reshape(b * s, h, w, c).permute(0, 3, 1, 2)
    maps = maps + scale * sincos_pos_embed_2d(c, h, w).to(feats.dtype)
    out = F.interpolate(maps, size=grid, mode="bilinear", align_corners=True)
    return out.permute(0, 2, 3, 1).reshape(b, s * grid[0] * grid[1], c)


def reference_crop(feats: torch.Tensor, grid: tuple[int, int], boxes: torch.Tensor,
                   scale: float) -> torch.Tensor:
    """F.grid_sample on a box lattice written out here (border padding, align_corners)."""
    b, s, h, w, c = feats.shape
    gh, gw = grid
    maps = feats.reshape(b * s, h, w, c).permute(0, 3, 1, 2)
    maps = maps + scale * sincos_pos_embed_2d(c, h, w).to(feats.dtype)
    bx = boxes.reshape(b * s, 4).to(feats.dtype)
    ty = torch.linspace(0, 1, gh, dtype=feats.dtype) if gh > 1 else torch.full((1,), 0.5, dtype=feats.dtype)
    tx = torch.linspace(0, 1, gw, dtype=feats.dtype) if gw > 1 else torch.full((1,), 0.5, dtype=feats.dtype)
    ys = bx[:, 1:2] + (bx[:, 3:4] - bx[:, 1:2]) * ty  # [N, gh]
    xs = bx[:, 0:1] + (bx[:, 2:3] - bx[:, 0:1]) * tx  # [N, gw]
    grid_xy = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1) * 2 - 1
    out = F.grid_sample(maps, grid_xy, mode="bilinear", padding_mode="border", align_corners=True)
    return out.permute(0, 2, 3, 1).reshape(b, s * gh * gw, c)


@settings(max_examples=30, deadline=None)
@given(layers=st.integers(1, 4), views=st.integers(1, 2), h=st.integers(1, 7), w=st.integers(2, 7),
       gh=st.integers(1, 5), gw=st.integers(1, 5), scale=st.sampled_from([0.0, 0.1]),
       crop=st.booleans(), seed=st.integers(0, 10_000))
def test_fused_resampling_equals_one_interpolate_per_layer(layers, views, h, w, gh, gw, scale, crop,
                                                           seed) -> None:
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(2, views, h, w, 8, generator=g, dtype=torch.float64) for _ in range(layers)]
    boxes = None
    if crop:
        lo = torch.rand(2, views, 2, generator=g, dtype=torch.float64) * 0.4
        size = 0.2 + 0.4 * torch.rand(2, views, 2, generator=g, dtype=torch.float64)
        boxes = torch.cat([lo, lo + size], -1)
    cfg = AlignConfig(student_layers=list(range(1, layers + 1)), teacher_layers=list(range(1, layers + 1)),
                      student_dim=8, teacher_dim=8, pos_embed_scale=scale)
    got = Aligner(cfg).targets(feats, (gh, gw), crop_boxes=boxes)
    for f, out in zip(feats, got, strict=True):
        want = (reference_full_frame(f, (gh, gw), scale) if boxes is None
                else reference_crop(f, (gh, gw), boxes, scale))
        assert out.is_contiguous()
        torch.testing.assert_close(out, want, rtol=1e-9, atol=1e-9)
    stacked = Aligner(cfg).targets(torch.stack(feats), (gh, gw), crop_boxes=boxes)
    for a, b in zip(stacked, got, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_targets_at_the_compute_dtype() -> None:
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, 2, 9, 9, 8, generator=g) for _ in range(3)]
    aligner = Aligner(tiny_config())
    got = aligner.targets(feats, (4, 4), dtype=torch.bfloat16)
    assert all(t.dtype == torch.bfloat16 for t in got)
    for f, out in zip(feats, got, strict=True):
        want = reference_full_frame(f.double(), (4, 4), 0.1)
        torch.testing.assert_close(out.double(), want, rtol=2e-2, atol=2e-2)


def test_constant_tables_are_built_once_per_shape_device_dtype() -> None:
    cpu = torch.device("cpu")
    assert pos_embed_table(8, 5, 5, cpu, torch.float32) is pos_embed_table(8, 5, 5, cpu, torch.float32)
    assert pos_embed_table(8, 5, 5, cpu, torch.float32) is not pos_embed_table(8, 5, 5, cpu, torch.float64)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.13, 0.2, 0.71, 0.9]])
    ry, rx = crop_weights(boxes, 37, 37, (16, 16), torch.float32)
    # each output row of an interpolation matrix is a convex combination of <= 2 inputs
    torch.testing.assert_close(ry.sum(-1), torch.ones(2, 16))
    assert int((ry > 0).sum(-1).max()) <= 2 and int((rx > 0).sum(-1).max()) <= 2
    with torch.inference_mode():  # a table first built in inference mode still serves training
        table = pos_embed_table(12, 3, 3, cpu, torch.float32)
    assert not table.is_inference()


def test_resample_layers_rejects_unstacked_input() -> None:
    from rocket_vla.errors import RocketError

    with pytest.raises(RocketError, match=r"\[L, B, S, h, w, C\]"):
        resample_layers(torch.zeros(2, 2, 3, 3, 8), (2, 2))


# ------------------------------------------------------------------ compile
@pytest.mark.parametrize("mask_kind", ["none", "tokens", "pairs"])
def test_loss_has_no_graph_break(mask_kind: str) -> None:
    aligner = Aligner(tiny_config())
    student, teacher = loss_inputs(3)
    mask = {"none": None, "tokens": torch.rand(2, 6) > 0.3, "pairs": torch.rand(3, 2, 6) > 0.3}[mask_kind]
    explained = torch._dynamo.explain(aligner._pair_losses)(student, teacher, mask)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_compiled_aligner_equals_eager_in_loss_and_gradients() -> None:
    """One tiny inductor compile (tens of seconds on a CPU): loss and every gradient."""
    torch.manual_seed(0)
    eager = Aligner(tiny_config())
    compiled = Aligner(tiny_config(), compile=True)
    compiled.load_state_dict(eager.state_dict())
    assert compiled.compiles_on(torch.device("cpu")) and not eager.compiles_on(torch.device("cpu"))
    mask = torch.rand(2, 6, generator=torch.Generator().manual_seed(3)) > 0.3
    results = []
    for aligner in (eager, compiled):
        student, teacher = loss_inputs(3)
        out = aligner(student, teacher, mask)
        out.weighted.backward()
        grads = [s.grad for s in student] + [p.grad for p in aligner.parameters()]
        results.append((out.loss.detach(), out.per_pair, grads))
    (loss_e, pairs_e, grads_e), (loss_c, pairs_c, grads_c) = results
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pairs_c, pairs_e, rtol=1e-5, atol=1e-6)
    for gc, ge in zip(grads_c, grads_e, strict=True):
        torch.testing.assert_close(gc, ge, rtol=1e-4, atol=1e-6)
    assert set(compiled.state_dict()) == set(eager.state_dict())
    clone = copy.deepcopy(compiled)  # compiled callables are dropped from copies, not copied
    assert clone._compiled == {} and compiled._compiled
    torch.testing.assert_close(clone.projectors.projector(0).fc1.weight,
                               compiled.projectors.projector(0).fc1.weight)


def test_default_compiles_only_on_cuda() -> None:
    aligner = Aligner(tiny_config())
    assert not aligner.compiles_on(torch.device("cpu"))
    assert Aligner(tiny_config(), compile=False).compiles_on(torch.device("cuda")) is False


# ------------------------------------------------------------------ no device sync
def tiny_llama() -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, vocab_size=64, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)


def rocket_step(model, aligner, ids, feats, boxes) -> torch.Tensor:
    """The aligner's part of a training step: taps, targets, loss, backward."""
    with LayerTaps(model, "model.layers", [1, 2, 3], spans=[(1, 3), (3, 5)]) as taps:
        model(ids)
        targets = aligner.targets(feats, (2, 2), boxes)
        out = aligner(taps.states, targets)
        out.weighted.backward()
    return out.per_pair


def sync_free_inputs(device: str = "cpu"):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (2, 8), generator=g).to(device)
    feats = [torch.randn(2, 1, 5, 5, 8, generator=g).to(device) for _ in range(3)]
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.7, 0.9]]).to(device)
    return ids, feats, boxes


def test_hot_path_never_reads_a_tensor_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every host read-back of a tensor raises while taps, targets and the loss run."""
    model = tiny_llama()
    aligner = Aligner(tiny_config())
    inputs = sync_free_inputs()
    rocket_step(model, aligner, *inputs)  # first call: builds the cached tables

    def forbidden(name: str):
        def raiser(self, *args, **kwargs):
            raise AssertionError(f"Tensor.{name} reached on the hot path")
        return raiser

    for name in ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden(name))
    per_pair = rocket_step(model, aligner, *inputs)
    monkeypatch.undo()
    assert per_pair.shape == (3,) and torch.isfinite(per_pair).all()
    with pytest.raises(AssertionError, match="Tensor.item"):  # the patch does bite
        monkeypatch.setattr(torch.Tensor, "item", forbidden("item"))
        torch.ones(()).item()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (sync debug mode)")
def test_hot_path_does_not_sync_the_cuda_device() -> None:
    model = tiny_llama().cuda()
    aligner = Aligner(tiny_config(), compile=False).cuda()
    inputs = sync_free_inputs("cuda")
    rocket_step(model, aligner, *inputs)  # warm-up: cached tables, allocator
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        rocket_step(model, aligner, *inputs)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ------------------------------------------------------------------ taps
def test_adjacent_spans_are_one_view_without_a_copy() -> None:
    model = tiny_llama()
    ids = sync_free_inputs()[0]
    with LayerTaps(model, "model.layers", [1], spans=[(1, 3), (3, 5)]) as taps:
        out = model(ids, output_hidden_states=True)
        state = taps.states[0]
        stream = taps._captured[1]
    assert state._base is stream or state.untyped_storage().data_ptr() == stream.untyped_storage().data_ptr()
    torch.testing.assert_close(state, out.hidden_states[1][:, 1:5])
    with LayerTaps(model, "model.layers", [1], spans=[(0, 2), (4, 6)]) as taps:
        out = model(ids, output_hidden_states=True)
        gapped = taps.states[0]
    want = torch.cat([out.hidden_states[1][:, 0:2], out.hidden_states[1][:, 4:6]], dim=1)
    torch.testing.assert_close(gapped, want)
