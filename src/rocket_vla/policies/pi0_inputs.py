"""Prompt ids and image-token positions shared by the transformers-backed students (pi0, OFT).

Why a helper: both students turn our raw instruction strings into the token ids of a
transformers model and must then say where that model's image tokens sit. Two rules hold
for both:

* **text** goes through the checkpoint's own tokenizer when one is on disk next to the
  weights (``tokenizer="checkpoint"``, loaded with ``local_files_only``). Models built from
  a config (the offline tiny presets) have no tokenizer files, so ``tokenizer="words"``
  maps lower-cased words deterministically into the model's vocabulary with CRC-32 -- the
  same ids in every process and release -- keeping clear of the special ids (padding,
  BOS, newline, image tokens). A pretrained checkpoint must not be fed hashed words, so
  ``"checkpoint"`` without tokenizer files is an error rather than a fallback.
* **image-token positions** are read from ``input_ids`` by comparing with the model's own
  image-token id(s) from its config, never from a hard-coded offset.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from rocket_vla.errors import RocketError

TOKENIZERS = ("words", "checkpoint")
_WORD = re.compile(r"[a-z0-9]+")

# Special ids of the hashed-word tokenizer, chosen to match Gemma's layout (pad 0, eos 1,
# bos 2); the newline that ends a PaliGemma/pi0 prompt gets id 3. Words hash into
# ``WORD_FIRST .. vocab_size - 1``.
PAD_ID, EOS_ID, BOS_ID, NEWLINE_ID = 0, 1, 2, 3
WORD_FIRST = 4


def hashed_word_ids(text: str, vocab_size: int, exclude: frozenset[int] = frozenset()) -> list[int]:
    """Lower-cased alphanumeric words of ``text`` as ids in ``WORD_FIRST .. vocab_size - 1``.

    An id in ``exclude`` (an image-token id inside the vocabulary) moves to the next free id,
    so a word can never pose as an image token.
    """
    span = vocab_size - WORD_FIRST
    if span < 1 + len(exclude):
        raise RocketError(
            f"a vocabulary of {vocab_size} ids leaves no room for hashed words; give the model "
            f"a vocab_size above {WORD_FIRST + len(exclude)}."
        )
    ids = []
    for word in _WORD.findall(text.lower()):
        offset = zlib.crc32(word.encode("utf-8")) % span
        while WORD_FIRST + offset in exclude:
            offset = (offset + 1) % span
        ids.append(WORD_FIRST + offset)
    return ids


@dataclass
class TextEncoder:
    """Instruction strings -> id lists for one model (see the module docstring).

    ``tokenizer="checkpoint"`` loads ``AutoTokenizer`` from ``path`` (local files only);
    ``"words"`` hashes words into ``vocab_size`` avoiding ``exclude``.
    """

    kind: str
    vocab_size: int
    exclude: frozenset[int] = frozenset()
    path: str | None = None
    _hf: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in TOKENIZERS:
            raise RocketError(f"unknown tokenizer {self.kind!r}; choose one of {', '.join(TOKENIZERS)}.")
        if self.kind == "checkpoint":
            if self.path is None:
                raise RocketError(
                    "tokenizer='checkpoint' needs a student path with tokenizer files; pass "
                    "--student_path DIR or use tokenizer='words' for a model built from a config."
                )
            from transformers import AutoTokenizer

            try:
                self._hf = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            except (OSError, ValueError, TypeError) as err:
                raise RocketError(
                    f"no tokenizer could be loaded from {self.path} ({type(err).__name__}); copy the "
                    "checkpoint's tokenizer files there or set tokenizer='words'."
                ) from None

    @property
    def bos(self) -> list[int]:
        if self._hf is None:
            return [BOS_ID]
        return [self._hf.bos_token_id] if self._hf.bos_token_id is not None else []

    @property
    def newline(self) -> list[int]:
        if self._hf is None:
            return [NEWLINE_ID]
        return list(self._hf("\n", add_special_tokens=False).input_ids)

    @property
    def pad(self) -> int:
        if self._hf is None or self._hf.pad_token_id is None:
            return PAD_ID
        return int(self._hf.pad_token_id)

    def encode(self, text: str) -> list[int]:
        if self._hf is None:
            return hashed_word_ids(text, self.vocab_size, self.exclude)
        return list(self._hf(text, add_special_tokens=False).input_ids)


def pad_rows(rows: Sequence[Sequence[int]], length: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (or cut) id lists to ``length``: ``input_ids`` and ``attention_mask`` ``[B, L]``."""
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        row = list(row)[:length]
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def image_token_index(
    input_ids: torch.Tensor, image_token_ids: Sequence[int], expected: int
) -> list[tuple[int, int]] | torch.Tensor:
    """Where the image tokens are, from the ids alone.

    Returns ``[(start, stop)]`` when every sample has one contiguous run at the same place
    (cheap slicing in :class:`~rocket_vla.align.LayerTaps`), else a ``[B, T]`` index tensor.
    ``expected`` is the number of image tokens per sample the model's config implies; any
    other count means the prompt was built wrongly, which is reported rather than tapped.
    """
    ids = torch.as_tensor(input_ids)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for token in image_token_ids:
        mask |= ids == token
    counts = mask.sum(dim=1)
    if bool((counts != expected).any()):
        raise RocketError(
            f"found {counts.tolist()} image tokens per sample where the model expects {expected}; "
            "build the prompt with one image-token run per camera."
        )
    index = mask.nonzero()[:, 1].view(ids.shape[0], expected)
    first = index[0]
    contiguous = bool((first[1:] - first[:-1] == 1).all()) if expected > 1 else True
    if contiguous and bool((index == first).all()):
        return [(int(first[0]), int(first[-1]) + 1)]
    return index


def set_paligemma_layout(student: Any, config: Any, *, name: str, vision: Any, text: Any,
                         image_token_id: int, max_state_dim: int, max_action_dim: int,
                         chunk: int) -> None:
    """The checks and Student attributes that pi0 and pi0.5 share (both read images through a
    PaliGemma vision tower and pad state/actions to fixed widths): refused when the data does
    not fit the model, then image grid, depth, width, chunk and prompt encoder set on
    ``student``. ``name`` names the model in the messages."""
    if vision.image_size % vision.patch_size:
        raise RocketError(f"{name} vision image_size {vision.image_size} is not a multiple of "
                          f"patch_size {vision.patch_size}; pick sizes that divide.")
    if config.proprio_dim > max_state_dim or config.action_dim > max_action_dim:
        raise RocketError(f"{name} pads state to {max_state_dim} and actions to {max_action_dim} dims, "
                          f"fewer than the data's {config.proprio_dim}/{config.action_dim}; raise "
                          "max_state_dim/max_action_dim.")
    if config.execute < 1 or config.execute > chunk:
        raise RocketError(f"execute={config.execute} must lie in 1..{chunk} (the chunk length); "
                          "choose how many actions of a chunk to run.")
    student.image_token_id = int(image_token_id)
    student.text = TextEncoder(config.tokenizer, int(text.vocab_size), frozenset({student.image_token_id}),
                               path=config.student_path)
    student.image_size = int(vision.image_size)
    side = student.image_size // int(vision.patch_size)
    student.image_grid = (side, side)
    student.tokens_per_image = side * side
    student.depth = int(text.num_hidden_layers)
    student.width = int(text.hidden_size)
    student.num_cameras = config.num_cameras
    student.chunk = int(chunk)
    student.action_dim = config.action_dim
    student.proprio_dim = config.proprio_dim
    student.default_execute = config.execute


def paligemma_pixels(student: Any, images: torch.Tensor, name: str) -> torch.Tensor:
    """``[B, S, 3, H, W]`` frames in [0, 1] -> the ``[-1, 1]`` float32 pixels a PaliGemma tower
    reads, resized (bilinear, antialiased) to ``student.image_size`` when they differ."""
    if images.dim() != 5 or images.shape[1] != student.num_cameras or images.shape[2] != 3:
        raise RocketError(f"{name} expects images [B, {student.num_cameras}, 3, H, W], got "
                          f"{tuple(images.shape)}; pass one RGB image per camera.")
    images = images.to(device=student.device, dtype=torch.float32)
    b, s = images.shape[:2]
    side = student.image_size
    if images.shape[-2:] != (side, side):
        images = F.interpolate(images.flatten(0, 1), size=(side, side), mode="bilinear",
                               antialias=True, align_corners=False).view(b, s, 3, side, side)
    return (images - 0.5) / 0.5


def flow_targets(student: Any, batch: dict[str, Any], name: str, max_action_dim: int,
                 dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The training targets of a flow-matching student: actions padded to ``max_action_dim``
    and their mask (when the batch has actions), and optional fixed draws (``noise``,
    ``timestep``: tests, exact reproduction; time stays float32)."""
    device = student.device
    out: dict[str, torch.Tensor] = {}
    if "actions" in batch:
        actions = batch["actions"].to(device=device, dtype=torch.float32)
        if actions.shape[1:] != (student.chunk, student.action_dim):
            raise RocketError(f"{name} trains on chunks of {student.chunk} x {student.action_dim} actions, "
                              f"got {tuple(actions.shape[1:])}; build the dataset with "
                              f"chunk={student.chunk}.")
        out["actions"] = F.pad(actions, (0, max_action_dim - student.action_dim)).to(dtype)
        mask = batch.get("action_mask")
        out["action_mask"] = (torch.ones(len(actions), student.chunk, dtype=torch.bool) if mask is None
                              else mask.bool()).to(device)
    if "noise" in batch:
        out["noise"] = batch["noise"].to(device=device, dtype=dtype)
    if "timestep" in batch:
        out["timestep"] = batch["timestep"].to(device=device, dtype=torch.float32)
    return out
