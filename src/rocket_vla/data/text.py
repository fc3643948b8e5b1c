"""Instruction tokenisers that need no downloaded vocabulary (MiniVLA's, usable by any student).

Why here and not in ``policies/``: they are plain text -> id functions with no model in them,
and keeping them in ``data/`` lets tools that only read data (caches, statistics) use them
without importing any student.

* ``bytes``: UTF-8 bytes + 1 (0 is padding);
* ``words``: lower-cased alphanumeric words hashed with CRC-32 into a fixed table. Words keep
  a LIBERO instruction (12-20 words, up to ~90 bytes) whole in a quarter of the tokens.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import torch

from rocket_vla.errors import RocketError

PAD_TOKEN = 0
BYTE_VOCAB = 257  # 256 byte values shifted by one, plus padding
WORD_VOCAB = 4096  # hashed word ids 1..4095, plus padding
TOKENIZERS = ("bytes", "words")
_WORD = re.compile(r"[a-z0-9]+")


def word_id(word: str) -> int:
    """Stable id of a lower-case word in ``1 .. WORD_VOCAB - 1`` (CRC-32, not Python's
    salted ``hash``, so ids are the same in every process and every release)."""
    return 1 + zlib.crc32(word.encode("utf-8")) % (WORD_VOCAB - 1)


def tokenize(texts: Sequence[str], max_len: int, kind: str = "bytes") -> torch.Tensor:
    """Tokens ``[B, max_len]``, 0 = padding, long text cut at ``max_len`` tokens.

    ``bytes``: UTF-8 bytes + 1. ``words``: lower-cased alphanumeric words, each
    :func:`word_id` (punctuation dropped; a hash collision merely shares an embedding).
    """
    if kind not in TOKENIZERS:
        raise RocketError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZERS)}.")
    out = torch.zeros(len(texts), max_len, dtype=torch.long)
    for i, text in enumerate(texts):
        if kind == "words":
            ids = [word_id(w) for w in _WORD.findall(text.lower())][:max_len]
        else:
            ids = [b + 1 for b in text.encode("utf-8")[:max_len]]
        if ids:
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out
