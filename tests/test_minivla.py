"""MiniVLA: the token layout the aligner relies on, its errors, and the two tokenizers (the checks
every student passes are in test_student_conformance.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from minivla_fixtures import single_thread

from rocket_vla.align import LayerTaps
from rocket_vla.errors import RocketError
from rocket_vla.policies.losses import action_l1
from rocket_vla.policies.minivla import WORD_VOCAB, MiniVLA, MiniVLAConfig, tokenize, word_id


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _inputs(cfg: MiniVLAConfig, b: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(b, cfg.num_cameras, 3, cfg.image_size, cfg.image_size, generator=g)
    proprio = torch.randn(b, cfg.proprio_dim, generator=g)
    return images, proprio, tokenize(["pick up the bowl", "open the drawer"][:b], cfg.max_text_len)


def test_presets_and_errors() -> None:
    assert MiniVLAConfig.preset("demo").grid == (4, 4)
    with pytest.raises(RocketError, match="unknown MiniVLA size"):
        MiniVLAConfig.preset("huge")
    with pytest.raises(RocketError, match="multiple of patch_size"):
        MiniVLAConfig(image_size=30, patch_size=8)
    model = MiniVLA(MiniVLAConfig.preset("tiny"))
    with pytest.raises(RocketError, match="resize"):
        model(torch.rand(1, 2, 3, 40, 40), torch.zeros(1, 8), tokenize(["x"], 16))


def test_visual_span_holds_each_camera_row_major() -> None:
    """Changing one patch of camera 1 changes exactly its token in the embedding stream."""
    cfg = MiniVLAConfig.preset("tiny")
    model = MiniVLA(cfg).eval()
    images, proprio, text = _inputs(cfg, 1)
    p, (gh, gw) = cfg.patch_size, cfg.grid
    with LayerTaps(model, model.blocks_path, [0, -1], spans=model.visual_spans,
                   final=model.final_path) as taps:
        model(images, proprio, text)
        before = [s.clone() for s in taps.states]
        edited = images.clone()
        row, col = 1, 2
        edited[0, 1, :, row * p : (row + 1) * p, col * p : (col + 1) * p] += 0.5
        model(edited, proprio, text)
        after = taps.states
    assert before[0].shape == (1, cfg.num_cameras * gh * gw, cfg.dim)
    assert before[1].shape == before[0].shape
    changed = (after[0] - before[0]).abs().sum(-1)[0].nonzero().flatten().tolist()
    assert changed == [gh * gw + row * gw + col]


def test_text_padding_is_ignored() -> None:
    cfg = MiniVLAConfig.preset("tiny")
    model = MiniVLA(cfg).eval()
    images, proprio, _ = _inputs(cfg, 1)
    short = tokenize(["go"], cfg.max_text_len)
    assert short[0, :3].tolist() == [ord("g") + 1, ord("o") + 1, 0]
    a = model(images, proprio, short)
    model.text_pos.data[5:] += 1.0  # positions of padded tokens must not matter
    b = model(images, proprio, short)
    assert torch.allclose(a, b, atol=1e-6)


def test_word_tokenizer_against_a_hand_computed_case() -> None:
    import zlib

    tokens = tokenize(["Pick up the bowl, then STOP.", ""], 6, "words")
    words = ("pick", "up", "the", "bowl", "then", "stop")
    want = [1 + zlib.crc32(w.encode()) % (WORD_VOCAB - 1) for w in words]
    assert tokens[0].tolist() == want  # lower-cased, punctuation dropped, cut at 6 tokens
    assert tokens[1].tolist() == [0] * 6
    assert tokenize(["a b"], 4, "words")[0].tolist() == [word_id("a"), word_id("b"), 0, 0]
    with pytest.raises(RocketError, match="unknown tokenizer"):
        tokenize(["x"], 4, "chars")
    with pytest.raises(RocketError, match="unknown MiniVLA tokenizer"):
        MiniVLAConfig.preset("tiny", tokenizer="chars")


def test_word_tokenizer_keeps_every_libero_instruction_whole_and_distinct() -> None:
    """Every instruction of the five LIBERO suites fits the demo preset, and no two of
    their words share an id -- so word hashing loses nothing on the benchmark."""
    benchmark = pytest.importorskip("libero.libero.benchmark")
    cfg = MiniVLAConfig.preset("demo")
    words: set[str] = set()
    for suite in ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"):
        bench = benchmark.get_benchmark_dict()[suite]()
        for i in range(bench.n_tasks):
            text = bench.get_task(i).language
            words.update(text.lower().split())
            tokens = cfg.tokenize([text])[0]
            assert int((tokens != 0).sum()) == len(text.split()) <= cfg.max_text_len
    assert len({word_id(w) for w in words}) == len(words)


def test_word_model_ignores_padding_and_reads_words() -> None:
    cfg = MiniVLAConfig.preset("tiny", tokenizer="words")
    model = MiniVLA(cfg).eval()
    images, proprio, _ = _inputs(cfg, 1)
    assert model.text_embed.num_embeddings == WORD_VOCAB
    a = model(images, proprio, cfg.tokenize(["open the drawer"]))
    model.text_pos.data[3:] += 1.0
    assert torch.allclose(a, model(images, proprio, cfg.tokenize(["open the drawer"])), atol=1e-6)
    assert not torch.allclose(a, model(images, proprio, cfg.tokenize(["close the drawer"])), atol=1e-4)


def test_action_l1_ignores_padded_steps() -> None:
    pred = torch.zeros(1, 8, 7)
    target = torch.ones(1, 8, 7)
    target[0, 4:] = 100.0
    mask = torch.tensor([[True] * 4 + [False] * 4])
    assert action_l1(pred, target, mask).item() == pytest.approx(1.0)
