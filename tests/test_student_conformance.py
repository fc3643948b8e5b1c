"""What every registered student must do, checked the same way for each (found from the
registry, so a new student file is checked without editing this one), and for the example
student of docs/students.md, copied from the page into a module of its own.

References are independent of the code under test: block outputs read by plain forward hooks,
the image tokens found by changing the images, a plain loop over the tokens, the real
checkpoint writer and reader.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from minivla_fixtures import single_thread
from torch import nn

import rocket_vla.policies
from rocket_vla.align import LayerTaps
from rocket_vla.dictconfig import DictConfig
from rocket_vla.policies import student as student_module
from rocket_vla.policies.student import (
    CHECKPOINT_FORMAT,
    Student,
    apply_lora,
    build_student,
    discover_students,
    load_student,
    register_student,
    student_class,
)
from rocket_vla.train.checkpoint import save_checkpoint

KINDS = discover_students()
DOC = Path(__file__).resolve().parents[1] / "docs" / "students.md"
INSTRUCTIONS = ["put the bowl on the stove", "open the middle drawer of the cabinet", "turn on the stove"]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _build(kind: str) -> Callable[[], Student]:
    def make() -> Student:
        torch.manual_seed(0)
        return build_student(kind)
    return make


def _batch(student: Student, b: int = 2, seed: int = 1) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    size = student.image_size
    mask = torch.ones(b, student.chunk, dtype=torch.bool)
    mask[-1, -2:] = False  # the last sample's episode ends inside the chunk
    return {"images": torch.rand(b, student.num_cameras, 3, size, size, generator=g),
            "proprio": torch.randn(b, student.proprio_dim, generator=g),
            "instructions": INSTRUCTIONS[:b],
            "actions": torch.randn(b, student.chunk, student.action_dim, generator=g).clamp(-1, 1),
            "action_mask": mask}


def _tensor(value: Any, kwargs: dict[str, Any] | None = None) -> torch.Tensor:
    if isinstance(value, tuple) and value:
        value = value[0]
    if not isinstance(value, torch.Tensor) and kwargs:
        value = kwargs.get("hidden_states")
    assert isinstance(value, torch.Tensor)
    return value


def _block_streams(student: Student, run: Callable[[], Any]) -> dict[int, torch.Tensor]:
    """Hidden state k (0 = the first block's input, k = block k's output; the last one the
    input of ``final_path`` when set) by plain forward hooks, first call kept."""
    blocks = student.get_submodule(student.blocks_path)
    seen: dict[int, torch.Tensor] = {}

    def keep(k: int, value: torch.Tensor) -> None:
        seen.setdefault(k, value)

    last = len(blocks)
    first = blocks[0].register_forward_pre_hook(lambda m, a, kw: keep(0, _tensor(a, kw)), with_kwargs=True)
    handles = [first]
    for k, block in enumerate(blocks, start=1):
        if k < last or not student.final_path:
            handles.append(block.register_forward_hook(lambda m, a, out, k=k: keep(k, _tensor(out))))
    if student.final_path:
        final = student.get_submodule(student.final_path)
        handles.append(final.register_forward_pre_hook(lambda m, a, kw: keep(last, _tensor(a, kw)),
                                                       with_kwargs=True))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


def _positions(index: list[tuple[int, int]] | torch.Tensor, b: int) -> list[list[int]]:
    if isinstance(index, torch.Tensor):
        return [row.tolist() for row in index.expand(b, -1)]
    return [[t for start, stop in index for t in range(start, stop)] for _ in range(b)]


# ----------------------------------------------------------------------------- the checks
def check_taps_read_the_visual_tokens(make: Callable[[], Student]) -> None:
    """Taps at every index equal the block stream on exactly the image tokens."""
    student = make().eval()
    batch = _batch(student)
    inputs = student.prepare(batch)
    index = student.visual_index(inputs)
    rows = _positions(index, 2)
    grid = student.image_grid
    assert all(len(r) == student.num_cameras * grid[0] * grid[1] for r in rows)
    indices = list(range(student.depth + 1))
    with torch.no_grad(), LayerTaps(student, student.blocks_path, indices, final=student.final_path) as taps:
        taps.use_tokens(index)
        ref = _block_streams(student, lambda: student.action_loss(inputs))
        states = taps.states
    for k in indices:
        want = torch.stack([ref[k][i, r] for i, r in enumerate(rows)])
        assert torch.equal(states[k], want), k
    # the image tokens are exactly the embeddings that change with the images
    other = student.prepare(dict(batch, images=torch.rand_like(batch["images"])))
    with torch.no_grad():
        moved = _block_streams(student, lambda: student.action_loss(other))[0]
    changed = (moved - ref[0]).abs().sum(-1) > 0
    assert [row.nonzero().flatten().tolist() for row in changed] == [sorted(r) for r in rows]


def check_action_loss_falls(make: Callable[[], Student]) -> None:
    student = make().train()
    inputs = student.prepare(_batch(student))
    opt = torch.optim.AdamW(student.parameters(), lr=2e-3)
    losses = []
    for _ in range(5):
        torch.manual_seed(0)  # the same noise/time draws every step: a repeated batch
        loss = student.action_loss(inputs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def _save(student: Student, root: Path, lora: dict[str, Any] | None = None) -> Path:
    config = {"format": CHECKPOINT_FORMAT,
              "student": {"kind": student.kind, "config": student.config_dict(), "lora": lora}}
    return save_checkpoint(root, 1, nn.ModuleDict({"policy": student}), config, {})


def check_save_load_and_batched_predict(make: Callable[[], Student], tmp_path: Path) -> None:
    student = make().eval()
    with torch.no_grad():  # away from the initialisation, so loading must restore the weights
        for p in student.parameters():
            p.add_(0.01 * torch.randn_like(p))
    loaded, saved = load_student(_save(student, tmp_path / "ckpt"))
    assert type(loaded) is type(student) and saved["student"]["kind"] == student.kind
    batch = _batch(student, b=3)
    torch.manual_seed(3)  # the same draws (flow-matching noise) for both
    pred = student.predict(student.prepare(batch))
    torch.manual_seed(3)
    assert torch.equal(pred, loaded.predict(loaded.prepare(batch)))
    assert pred.shape == (3, student.chunk, student.action_dim) and bool(pred.isfinite().all())


def check_lora_trains_adapters_and_full_train_only(make: Callable[[], Student]) -> None:
    student = apply_lora(make().train(), rank=2)
    full = tuple(student.full_train())
    names = [n for n, _ in student.named_parameters()]
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trainable == {n for n in names if "lora_" in n or (full and n.startswith(full))}
    assert any(n.startswith(student.blocks_path) and "lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(0)
    student.action_loss(student.prepare(_batch(student))).backward()
    opt.step()
    moved = {n for n, p in student.named_parameters() if not torch.equal(p, before[n])}
    assert moved <= trainable and any("lora_B" in n for n in moved)


# ----------------------------------------------------------------------------- every student
@pytest.mark.parametrize("kind", KINDS)
def test_taps_read_the_visual_tokens(kind: str) -> None:
    check_taps_read_the_visual_tokens(_build(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_action_loss_falls(kind: str) -> None:
    check_action_loss_falls(_build(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_and_batched_predict(kind: str, tmp_path: Path) -> None:
    check_save_load_and_batched_predict(_build(kind), tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_lora_trains_adapters_and_full_train_only(kind: str) -> None:
    check_lora_trains_adapters_and_full_train_only(_build(kind))


# ----------------------------------------------------------------------------- the docs' student
def doc_student_source() -> str:
    """The one ``python`` block of docs/students.md that registers a student."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    found = [b for b in blocks if "@register_student(" in b]
    assert len(found) == 1, "docs/students.md shows one complete student"
    return found[0]


def test_the_docs_student_is_found_as_a_new_file_and_conforms(tmp_path: Path, monkeypatch) -> None:
    """The page's student, saved as a new module of the policies package (and nothing else
    touched), is found by its kind and passes every check."""
    source = doc_student_source()
    assert len(source.splitlines()) <= 150
    kind = re.search(r'@register_student\("([^"]+)"\)', source).group(1)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "docs_example_student.py").write_text(source)
    package = rocket_vla.policies
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path / "pkg")])
    registry = student_module.REGISTRY
    monkeypatch.setattr(student_module, "REGISTRY", type(registry)(registry))
    monkeypatch.setattr(student_module, "_CLASSES", dict(student_module._CLASSES))
    monkeypatch.delitem(sys.modules, "rocket_vla.policies.docs_example_student", raising=False)
    try:
        assert kind in student_module.REGISTRY  # what `rocket train --student` checks
        cls = student_class(kind)  # not imported by hand: found by looking through the package
        assert cls.__module__ == "rocket_vla.policies.docs_example_student"
        make = _build(kind)
        check_taps_read_the_visual_tokens(make)
        check_action_loss_falls(make)
        check_save_load_and_batched_predict(make, tmp_path / "a")
        check_lora_trains_adapters_and_full_train_only(make)
    finally:
        sys.modules.pop("rocket_vla.policies.docs_example_student", None)
        importlib.invalidate_caches()


@dataclass
class _Config(DictConfig):
    width: int = 4


class _Methods:
    """The four methods, so that only the members under test are missing."""

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        return batch

    def visual_index(self, inputs: dict[str, Any]) -> list[tuple[int, int]]:
        return [(0, 1)]

    def action_loss(self, inputs: dict[str, Any]) -> torch.Tensor:
        return torch.zeros(())

    def predict(self, inputs: dict[str, Any]) -> torch.Tensor:
        return torch.zeros(1, 1, 1)


def test_a_student_missing_a_member_is_named_when_defined_or_built() -> None:
    with pytest.raises(TypeError, match="config_class"):
        type("NoConfig", (_Methods, Student), {})

    class Forgetful(_Methods, Student):
        config_class = _Config

        def __init__(self, config: _Config) -> None:
            super().__init__()
            self.config, self.blocks_path, self.blocks = config, "blocks", nn.ModuleList([nn.Linear(2, 2)])

    with pytest.raises(TypeError, match="does not set depth, width, num_cameras"):
        Forgetful(_Config())
    with pytest.raises(TypeError, match="is taken by"):
        register_student("minivla")(Forgetful)
