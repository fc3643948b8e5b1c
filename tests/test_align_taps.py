"""LayerTaps on unmodified models: a transformers Llama, checkpointed and hand-called blocks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from rocket_vla.align import AlignConfig, Aligner, LayerTaps
from rocket_vla.errors import RocketError

transformers = pytest.importorskip("transformers")

SPAN = (1, 5)  # visual tokens sit right after BOS, as in OpenVLA


def tiny_llama(layers: int = 4) -> nn.Module:
    cfg = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=64, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)


def ids() -> torch.Tensor:
    return torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))


def test_llama_taps_equal_hidden_states_without_modification() -> None:
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with LayerTaps(model, "model.layers", [0, 1, 3, -1], spans=[SPAN], final="model.norm") as taps:
        out = model(ids(), output_hidden_states=True)
        states = taps.states
    assert taps.indices == [0, 1, 3, 4]
    hs = out.hidden_states
    for k, state in zip([0, 1, 3], states, strict=False):
        torch.testing.assert_close(state, hs[k][:, SPAN[0]:SPAN[1]])
    # transformers applies the final norm to its last hidden_states entry; the tap returns
    # the raw residual stream after the last block, i.e. the norm's input.
    torch.testing.assert_close(model.model.norm(states[3]), hs[4][:, SPAN[0]:SPAN[1]])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(s.requires_grad for s in states)


def test_hooks_are_removed_on_exit_and_on_exception() -> None:
    model = tiny_llama()

    def count() -> int:
        return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())

    assert count() == 0
    with LayerTaps(model, "model.layers", [1, 4]):
        assert count() > 0
    assert count() == 0
    with pytest.raises(RuntimeError, match="boom"), LayerTaps(model, "model.layers", [2, -1]):
        model(ids())
        raise RuntimeError("boom")
    assert count() == 0


def test_gradients_reach_only_the_span_and_layers_up_to_the_deepest_tap() -> None:
    model = tiny_llama(layers=4)
    cfg = AlignConfig.preset("rocket", student_dim=32, teacher_dim=8, hidden_dim=16,
                             student_layers=[1, 2], teacher_layers=[1, 2])
    aligner = Aligner(cfg)
    full: dict[int, torch.Tensor] = {}
    with LayerTaps(model, "model.layers", [1, 2], spans=[SPAN]) as taps:
        model(ids())
        full = dict(taps._captured)
        targets = [torch.randn(2, 4, 8) for _ in range(2)]
        loss = aligner(taps.states, targets).loss
        # At the deepest tap the loss reads the stream directly and nowhere else; shallower
        # streams also feed later tokens through attention, so check the deepest one.
        grads = torch.autograd.grad(loss, [full[2]], retain_graph=True)
        loss.backward()
    for g in grads:
        outside = torch.cat([g[:, : SPAN[0]], g[:, SPAN[1]:]], dim=1)
        assert torch.count_nonzero(outside) == 0
        assert torch.count_nonzero(g[:, SPAN[0]:SPAN[1]]) > 0
    # blocks 3 and 4 are deeper than the deepest tap (index 2): no alignment gradient.
    for block in model.model.layers[2:]:
        assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in block.parameters())
    assert all(p.grad is not None for p in model.model.layers[0].parameters())
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0
               for p in aligner.parameters())
    assert model.lm_head.weight.grad is None


def test_transformers_gradient_checkpointing_gives_same_states_and_grads() -> None:
    def run(gc: bool):
        model = tiny_llama()
        model.train()
        if gc:
            enable = getattr(model, "activation_checkpointing_enable", None)
            (enable or model.gradient_checkpointing_enable)()
        with LayerTaps(model, "model.layers", [1, 3, -1], spans=[SPAN], final="model.norm") as taps:
            model(ids())
            states = taps.states
            captures = len(taps._captured)
            sum(s.square().mean() for s in states).backward()
            assert len(taps._captured) == captures == 3
        return [s.detach() for s in states], model.model.layers[0].mlp.up_proj.weight.grad

    plain_states, plain_grad = run(False)
    gc_states, gc_grad = run(True)
    for a, b in zip(plain_states, gc_states, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(plain_grad, gc_grad)


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class HandRolled(nn.Module):
    """A model that checkpoints its blocks itself, or calls their parts by hand."""

    def __init__(self, mode: str, dim: int = 16, depth: int = 3) -> None:
        super().__init__()
        self.mode = mode
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.final_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.mode == "plain":
                x = block(x)
            elif self.mode == "by_hand":  # never calls block(...): block hooks cannot fire
                x = x + block.mlp(block.norm(x))
            else:
                x = checkpoint(block, x, use_reentrant=self.mode == "reentrant")
        return self.final_norm(x)


@pytest.mark.parametrize("mode", ["reentrant", "non_reentrant", "by_hand"])
def test_hand_rolled_models_capture_once_with_graph(mode: str) -> None:
    torch.manual_seed(0)
    reference = HandRolled("plain")
    model = HandRolled(mode)
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 6, 16, requires_grad=True)
    entry = "norm" if mode == "by_hand" else None
    kwargs = dict(spans=[(0, 4)], final="final_norm", entry=entry)
    with LayerTaps(reference, "blocks", [0, 2, 3], **kwargs) as ref_taps:
        reference(x)
        ref_states = ref_taps.states
        sum(s.sum() for s in ref_states).backward()
        ref_grad, x.grad = x.grad, None
    with LayerTaps(model, "blocks", [0, 2, 3], **kwargs) as taps:
        model(x)
        states = taps.states
        assert all(s.requires_grad for s in states[1:])
        # reentrant checkpointing supports .backward() only, not autograd.grad
        sum(s.sum() for s in states).backward()
        grad = x.grad
        assert sorted(taps._captured) == [0, 2, 3]
    for a, b in zip(ref_states, states, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(grad, ref_grad)


def test_per_sample_token_index() -> None:
    model = HandRolled("plain")
    x = torch.randn(2, 6, 16)
    with LayerTaps(model, "blocks", [1]) as taps:
        taps.token_index = torch.tensor([[0, 1], [3, 5]])
        model(x)
        got = taps.states[0]
        full = taps._captured[1]
    torch.testing.assert_close(got[0], full[0, [0, 1]])
    torch.testing.assert_close(got[1], full[1, [3, 5]])


def test_multiple_spans_concatenate_in_order() -> None:
    model = HandRolled("plain")
    with LayerTaps(model, "blocks", [2], spans=[(0, 2), (4, 6)]) as taps:
        model(torch.randn(2, 7, 16))
        got, full = taps.states[0], taps._captured[2]
    torch.testing.assert_close(got, torch.cat([full[:, 0:2], full[:, 4:6]], dim=1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(layers="nope", indices=[1]), "does not exist"),
        (dict(layers="final_norm", indices=[1]), "not a ModuleList"),
        (dict(layers="blocks", indices=[4]), "out of range"),
        (dict(layers="blocks", indices=[-5]), "out of range"),
        (dict(layers="blocks", indices=[1, -3]), "duplicates"),
        (dict(layers="blocks", indices=[1], spans=[(3, 3)]), "empty"),
        (dict(layers="blocks", indices=[3], entry="norm"), "final="),
    ],
)
def test_bad_tap_arguments_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(RocketError, match=message):
        LayerTaps(HandRolled("plain"), **kwargs)


def test_span_past_the_sequence_and_reading_before_forward_are_clear_errors() -> None:
    model = HandRolled("plain")
    with LayerTaps(model, "blocks", [1], spans=[(0, 50)]) as taps:
        with pytest.raises(RocketError, match="run the model"):
            _ = taps.states
        model(torch.randn(1, 6, 16))
        with pytest.raises(RocketError, match="span ends at 50"):
            _ = taps.states


def test_use_tokens_replaces_the_spans_of_later_reads() -> None:
    """A student's per-batch ``visual_index`` (spans or a [B, T] index) selects exactly those
    tokens of the captured stream, whatever spans the taps were built with."""
    torch.manual_seed(0)
    blocks = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    x = torch.randn(2, 9, 4)
    with LayerTaps(blocks, "", [1], spans=[(0, 3)]) as taps:
        out = blocks[0](x)
        blocks(x)
        taps.use_tokens([(2, 4), (4, 6), (7, 9)])
        want = torch.cat([out[:, 2:6], out[:, 7:9]], dim=1)
        torch.testing.assert_close(taps.states[0], want)
        index = torch.tensor([[0, 5, 8], [1, 2, 3]])
        taps.use_tokens(index)
        torch.testing.assert_close(taps.states[0], torch.stack([out[0, [0, 5, 8]], out[1, [1, 2, 3]]]))
        taps.use_tokens(None)
        torch.testing.assert_close(taps.states[0], out)


def test_a_pass_starts_at_the_first_block_not_at_the_root() -> None:
    """A second pass that runs the blocks without the root's ``forward`` (a sampling method)
    replaces the captures of the first: nothing stale is read."""
    torch.manual_seed(0)
    model = HandRolled("plain")
    x, y = torch.randn(2, 1, 6, 16)
    with torch.no_grad(), LayerTaps(model, "blocks", [1]) as taps:
        model(x)
        nn.Sequential(*model.blocks)(y)
        torch.testing.assert_close(taps.states[0], model.blocks[0](y))
