"""Pretrained students from a local folder are checked before they train.

Real transformers checkpoints saved at tiny sizes: the right folder loads with every weight
from the file; a folder of another model type, or one with weights missing, left over or of
another shape, is refused with one sentence that lists what differs; pi0 weights under
LeRobot's ``paligemma_with_expert.*`` names load with nothing missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from minivla_fixtures import single_thread
from safetensors.torch import load_file, save_file

from rocket_vla.errors import RocketError
from rocket_vla.policies.oft import OFTStudent
from rocket_vla.policies.pi0 import PI0Student
from rocket_vla.policies.student import build_student


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def pi0_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny pi0 saved with transformers' own ``save_pretrained``."""
    torch.manual_seed(3)
    student = build_student("pi0", "tiny")
    folder = tmp_path_factory.mktemp("pi0")
    student.model.save_pretrained(folder)
    return folder, {k: v.clone() for k, v in student.model.state_dict().items()}


def _copy_with(folder: Path, dest: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """``folder``'s config with other weights: what a badly converted checkpoint looks like."""
    dest.mkdir()
    (dest / "config.json").write_text((folder / "config.json").read_text())
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dest / "model.safetensors"),
              metadata={"format": "pt"})
    return dest


def _tiny_llama(folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(folder)
    return folder


def test_own_layout_loads_every_weight(pi0_folder) -> None:
    folder, reference = pi0_folder
    loaded = PI0Student.build(path=str(folder), tokenizer="words", max_text_len=24)
    state = loaded.model.state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in reference)


@pytest.mark.parametrize("build", [lambda p: PI0Student.build(path=p, tokenizer="words"),
                                   lambda p: OFTStudent.build(path=p)], ids=["pi0", "oft"])
def test_a_folder_of_another_model_type_is_refused(tmp_path: Path, build) -> None:
    folder = _tiny_llama(tmp_path / "llama")
    with pytest.raises(RocketError, match=r"holds a 'llama' model, not a"):
        build(str(folder))


def test_missing_unexpected_and_reshaped_weights_are_refused(pi0_folder, tmp_path: Path) -> None:
    folder, reference = pi0_folder
    tensors = load_file(str(folder / "model.safetensors"))
    dropped = sorted(k for k in tensors if k.startswith("action_out_proj"))
    missing = _copy_with(folder, tmp_path / "missing", {k: v for k, v in tensors.items() if k not in dropped})
    with pytest.raises(RocketError,
                       match=r"2 weights missing \(action_out_proj.bias, action_out_proj.weight\)"):
        PI0Student.build(path=str(missing), tokenizer="words")
    extra = _copy_with(folder, tmp_path / "extra", {**tensors, "value_head.weight": torch.zeros(3, 3)})
    with pytest.raises(RocketError, match=r"1 weights unexpected \(value_head.weight\)"):
        PI0Student.build(path=str(extra), tokenizer="words")
    key = "embed_action_time.state_proj.weight"
    stored = next(k for k in tensors if k.endswith("state_proj.weight"))
    reshaped = _copy_with(folder, tmp_path / "reshaped", {**tensors, stored: tensors[stored][:, :-1]})
    with pytest.raises(RocketError, match=rf"1 weights of another shape \({re.escape(key)}\)"):
        PI0Student.build(path=str(reshaped), tokenizer="words")


def _lerobot_name(key: str, prefix: str = "model.") -> str:
    """transformers' pi0 key -> the name LeRobot's pi0 checkpoints store it under (``prefix``
    "model.": LeRobot's ``PI0Policy.model``; "" : openpi's converted PyTorch ``PI0Pytorch``)."""
    for ours, theirs in (("model.vlm.", "paligemma_with_expert.paligemma.model."),
                         ("model.dit.", "paligemma_with_expert.gemma_expert.model."),
                         ("embed_action_time.", "")):
        if key.startswith(ours):
            return prefix + theirs + key[len(ours):]
    return prefix + key


@pytest.mark.parametrize("prefix", ["model.", ""], ids=["lerobot", "openpi-pytorch"])
def test_lerobot_key_layout_loads_with_nothing_missing(pi0_folder, tmp_path: Path, prefix: str) -> None:
    folder, reference = pi0_folder
    renamed = {_lerobot_name(k, prefix): v for k, v in reference.items()}
    assert any(k.startswith(f"{prefix}paligemma_with_expert.gemma_expert.") for k in renamed)
    lerobot = _copy_with(folder, tmp_path / "lerobot", renamed)
    loaded = PI0Student.build(path=str(lerobot), tokenizer="words", max_text_len=24)
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_a_folder_without_config_json_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    with pytest.raises(RocketError, match="has no config.json"):
        PI0Student.build(path=str(tmp_path / "weights"), tokenizer="words")
    (tmp_path / "weights" / "config.json").write_text("{not json")
    with pytest.raises(RocketError, match="is not a valid JSON object"):
        PI0Student.build(path=str(tmp_path / "weights"), tokenizer="words")
