"""Prompt ids and image-token positions shared by the transformers-backed students.

Why a module of its own: pi0, pi0.5 and the OFT-style students all turn our raw instruction
strings into the token ids of a transformers model and must then say where that model's image
tokens sit. Two rules hold for all of them:

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

from rocket_vla.dictconfig import DictConfig
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


def instruction_rows(text: TextEncoder, instructions: Sequence[str], length: int) -> list[list[int]]:
    """``[BOS] instruction "\\n"`` per instruction, the instruction cut so that the row fits in
    ``length`` ids with its newline (PaliGemma's prompt, which pi0 and the OFT students share)."""
    return [(text.bos + text.encode(t))[: length - len(text.newline)] + text.newline for t in instructions]


@dataclass
class VLMStudentConfig(DictConfig):
    """The settings every transformers-backed student shares: where pretrained weights and the
    tokenizer came from, which tokenizer builds the prompt, and the data's widths."""

    student_path: str | None = None
    tokenizer: str = "words"  # see TOKENIZERS
    num_cameras: int = 2
    action_dim: int = 7
    proprio_dim: int = 8
