"""Smaller cache entries: sizes, and targets against the full-precision full-grid path."""

from __future__ import annotations

import pytest
import torch

from rocket_vla.align import resample_teacher
from rocket_vla.errors import RocketError
from rocket_vla.teachers.cache_forms import StoredForm, decode, encode, entry_bytes, targets_from_entry

FORMS = [StoredForm(g, d) for g in ("teacher", "student") for d in ("float16", "bfloat16", "float8_e4m3fn")]


def features(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # tokens of very different norms, as real teacher features have
    norms = torch.exp(2 * torch.randn(3, 2, 2, 9, 9, 1, generator=g))
    return torch.randn(3, 2, 2, 9, 9, 16, generator=g) * norms


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.label)
def test_entry_bytes_are_the_bytes_encode_produces(form: StoredForm) -> None:
    stored = encode(features(), form, student_grid=(4, 4))
    total = sum(t.numel() * t.element_size() for t in stored.values())
    per_sample = entry_bytes(form, layers=3, views=2, teacher_grid=(9, 9), student_grid=(4, 4), dim=16)
    assert total == 2 * per_sample  # batch of 2


def test_entry_bytes_at_vggt_1b_shapes() -> None:
    full = entry_bytes(StoredForm(), layers=10, views=2, teacher_grid=(37, 37), student_grid=(16, 16),
                       dim=2048)
    assert full == 10 * 2 * 37 * 37 * 2048 * 2  # 107 MiB
    small = entry_bytes(StoredForm("student", "float8_e4m3fn"), layers=10, views=2, teacher_grid=(37, 37),
                        student_grid=(16, 16), dim=2048)
    assert small == 10 * 2 * 16 * 16 * (2048 + 2)


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.label)
def test_targets_from_every_form_approximate_the_full_precision_targets(form: StoredForm) -> None:
    feats = features(1)
    reference = [resample_teacher(f.double(), (4, 4), pos_embed_scale=0.1) for f in feats]
    stored = encode(feats, form, student_grid=(4, 4))
    got = targets_from_entry(stored, form, teacher_grid=(9, 9), student_grid=(4, 4), pos_embed_scale=0.1)
    bound = {"float16": 2e-3, "bfloat16": 1e-2, "float8_e4m3fn": 8e-2}[form.dtype]
    for a, b in zip(got, reference, strict=True):
        cos = torch.nn.functional.cosine_similarity(a.double(), b, dim=-1)
        assert float((1 - cos).max()) < bound**2  # 1 - cos <= rel^2 / 2 + O(rel^4)
        rel = (a.double() - b).norm(dim=-1) / b.norm(dim=-1)
        assert float(rel.max()) < bound


def test_float8_keeps_small_and_large_tokens_on_the_same_relative_grid() -> None:
    x = torch.randn(1, 1, 1, 2, 2, 32)
    x[..., 0, 0, :] *= 1e-3
    x[..., 1, 1, :] *= 1e3
    back = decode(encode(x, StoredForm(dtype="float8_e4m3fn")), StoredForm(dtype="float8_e4m3fn"))
    rel = (back - x).norm(dim=-1) / x.norm(dim=-1)
    assert float(rel.max()) < 0.08


def test_student_grid_entries_refuse_another_student_grid() -> None:
    form = StoredForm("student")
    stored = encode(features(), form, student_grid=(4, 4))
    with pytest.raises(RocketError, match="rebuild the cache"):
        targets_from_entry(stored, form, teacher_grid=(9, 9), student_grid=(3, 3), pos_embed_scale=0.1)
    with pytest.raises(RocketError, match="unknown"):
        StoredForm(dtype="int4")
