"""The README's "ROCKET in your own training loop" snippet runs as written.

The snippet is read from README.md and executed unchanged; only the names it expects from the
reader's own code are defined here: ``vla`` (a stand-in with decoder blocks at
``language_model.model.layers``, 4096 wide, image tokens at positions 1..512), ``loader`` and
``device``. The teacher is the real bundled one the snippet loads.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet() -> str:
    text = README.read_text()
    section = text[text.index("## ROCKET in your own training loop"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


class _Block(nn.Module):
    """A cheap 4096-wide block: a learned per-channel scale and shift with a residual."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((width,), 0.1))
        self.shift = nn.Parameter(torch.zeros(width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + torch.tanh(h * self.scale + self.shift)


class _StandInVLA(nn.Module):
    """Six blocks where a transformers VLA keeps them; the loss reads the last stream."""

    def __init__(self, depth: int = 6, width: int = 4096) -> None:
        super().__init__()
        self.language_model = nn.Module()
        self.language_model.model = nn.Module()
        self.language_model.model.layers = nn.ModuleList(_Block(width) for _ in range(depth))
        self.head = nn.Linear(width, 7)

    def forward(self, embeds: torch.Tensor, actions: torch.Tensor) -> SimpleNamespace:
        h = embeds
        for block in self.language_model.model.layers:
            h = block(h)
        return SimpleNamespace(loss=(self.head(h[:, -1]) - actions).abs().mean())


def test_readme_training_loop_snippet_runs_as_written() -> None:
    torch.manual_seed(0)
    vla = _StandInVLA()
    g = torch.Generator().manual_seed(1)
    loader = [{"inputs": {"embeds": torch.randn(2, 520, 4096, generator=g) * 0.1,
                          "actions": torch.randn(2, 7, generator=g)},
               "frames": torch.rand(2, 2, 3, 112, 112, generator=g)} for _ in range(2)]
    scope = {"vla": vla, "loader": loader, "device": "cpu"}
    exec(compile(_snippet(), str(README), "exec"), scope)  # noqa: S102 - the README's own code
    cfg, aligner, align = scope["cfg"], scope["aligner"], scope["align"]
    assert cfg.variant == "rocket" and len(cfg.student_layers) == len(cfg.teacher_layers) == 4
    assert max(cfg.student_layers) == 6  # the balanced selection is deep-anchored
    loss = float(align.loss.detach())
    assert 0.0 < loss < 2.0  # a mean of 1 - cosine
    assert len(align.per_pair) == 4
    # AdamW keeps state only for parameters that received gradients: the aligner did (the
    # alignment loss reached it) and so did every tapped block of the VLA
    state = scope["optim"].state
    assert all(state[p]["step"] == 2 for p in aligner.parameters() if p.requires_grad)
    blocks = vla.language_model.model.layers
    assert all(p in state for k in cfg.student_layers for p in blocks[k - 1].parameters())
