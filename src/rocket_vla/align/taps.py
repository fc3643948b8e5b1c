"""Capture the residual stream of an unmodified model through forward hooks.

Index ``k < depth`` is read at the entry of block ``k+1`` (a forward pre-hook) and
index ``depth`` at the entry of a ``final`` module (e.g. the final norm) when one is
given, else at the output of the last block. Reading the *input* of the next block means
the same hook point works for models that call their blocks as modules and, through
``entry``, for models that call a block's parts by hand.

A pass over the blocks starts when the first block is entered: a pre-hook there drops the
previous pass's captures, so any method of the model that runs its blocks (a training loss, a
sampling loop, a plain call) is captured without routing through the root's ``forward``.
Gradient checkpointing re-runs blocks during backward; those re-runs would fire the hooks a
second time. A tap keeps only the first capture of each layer per pass and ignores anything
that fires while autograd is running backward (so a recomputed first block clears nothing).

Capturing costs no copy: a hook keeps a reference to the stream tensor the block already
holds for its backward, and :attr:`LayerTaps.states` returns a *view* of the image span
(adjacent spans are merged when the taps are built, so two cameras' consecutive token
ranges are one slice). Only spans with text between them need a concatenation. Nothing
here reads a tensor's values, so taps never make the device wait.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

import torch
from torch import nn

from rocket_vla.align.indices import resolve_layers
from rocket_vla.errors import RocketError

Span = tuple[int, int]


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    """``root.get_submodule`` with an error that names the fix."""
    if not path:
        return root
    try:
        return root.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in root.named_children()]
        raise RocketError(
            f"module path {path!r} does not exist in {type(root).__name__}; "
            f"check the path (top-level children: {names})."
        ) from None


def _in_backward() -> bool:
    """True while autograd's engine is executing (checkpoint recomputation runs there)."""
    task_id = getattr(torch._C, "_current_graph_task_id", None)
    return task_id is not None and task_id() != -1


def _first_tensor(value: Any, kwargs: dict[str, Any] | None = None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    if kwargs and isinstance(kwargs.get("hidden_states"), torch.Tensor):
        return kwargs["hidden_states"]
    if hasattr(value, "last_hidden_state"):
        return value.last_hidden_state
    raise RocketError(
        "a tapped module received no tensor as its first argument or `hidden_states`; "
        "tap a module whose input is the residual stream (see `entry=`)."
    )


def _merge_spans(spans: Sequence[Span]) -> list[Span]:
    """Join spans where one ends exactly where the next starts, keeping the order."""
    merged: list[Span] = []
    for start, stop in spans:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    return merged


class LayerTaps:
    """Context manager that records visual-token hidden states at chosen depths.

    Args:
        model: the unmodified model (paths are relative to it).
        layers: dotted path of the ``ModuleList`` of blocks (``"model.layers"``).
        indices: hidden-state indices in the project convention (see ``indices.py``).
        spans: ``(start, stop)`` token ranges of the visual tokens in the sequence,
            concatenated in order (e.g. ``[(1, 513)]``). ``None`` keeps every token.
            A per-batch ``[B, T]`` index tensor can be set on :attr:`token_index` instead.
        entry: for models that call parts of a block by hand instead of the block
            itself, a sub-module path inside each block whose *input* is the stream
            entering that block (e.g. ``"input_layernorm"``).
        final: path (from ``model``) of a module whose input is the stream after the
            last block (e.g. ``"model.norm"``); needed to tap the last block under
            reentrant checkpointing or with ``entry``.

    ``states`` returns one tensor ``[B, T_visual, D]`` per index, with its graph.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str,
        indices: Sequence[int],
        *,
        spans: Sequence[Span] | None = None,
        entry: str | None = None,
        final: str | None = None,
    ) -> None:
        self.model = model
        blocks = get_submodule(model, layers)
        if not isinstance(blocks, (nn.ModuleList, nn.Sequential)):
            raise RocketError(
                f"{layers!r} is a {type(blocks).__name__}, not a ModuleList of blocks; "
                "point `layers` at the list of transformer blocks."
            )
        self.blocks = blocks
        self.depth = len(blocks)
        self.indices = resolve_layers(list(indices), self.depth, what="student layer")
        self.spans = [tuple(s) for s in spans] if spans is not None else None
        for start, stop in self.spans or []:
            if not 0 <= start < stop:
                raise RocketError(
                    f"token span ({start}, {stop}) is empty or negative; give (start, stop) "
                    "with 0 <= start < stop."
                )
        self._slices = _merge_spans(self.spans) if self.spans is not None else None
        self.entry = entry
        self.final = get_submodule(model, final) if final else None
        if entry and self.depth in self.indices and self.final is None:
            raise RocketError(
                "tapping the last block with `entry=` needs `final=` (the module whose input "
                "is the stream after the last block, e.g. the final norm)."
            )
        self.token_index: torch.Tensor | None = None
        self._index_copy: tuple[torch.Tensor, torch.Tensor] | None = None
        self._captured: dict[int, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    # -- lifecycle -----------------------------------------------------------------
    def __enter__(self) -> LayerTaps:
        self.attach()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def attach(self) -> None:
        if self._handles:
            return
        first = self.blocks[0] if not self.entry else get_submodule(self.blocks[0], self.entry)
        self._handles.append(first.register_forward_pre_hook(self._on_first_block))
        for k in self.indices:
            if k < self.depth:
                module = self.blocks[k]
                if self.entry:
                    module = get_submodule(module, self.entry)
                self._handles.append(
                    module.register_forward_pre_hook(self._pre_hook(k), with_kwargs=True)
                )
            elif self.final is not None:
                self._handles.append(
                    self.final.register_forward_pre_hook(self._pre_hook(k), with_kwargs=True)
                )
            else:
                self._handles.append(self.blocks[-1].register_forward_hook(self._post_hook(k)))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._captured.clear()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    # -- hooks -----------------------------------------------------------------------
    def _on_first_block(self, module: nn.Module, args: Any) -> None:
        if not _in_backward():  # a checkpointed first block recomputed in backward starts no pass
            self._captured.clear()

    def _record(self, k: int, stream: torch.Tensor) -> None:
        if k in self._captured or _in_backward():
            return  # checkpoint recomputation, or a block called twice in a pass: keep the first.
        self._captured[k] = stream

    def _pre_hook(self, k: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self._record(k, _first_tensor(args, kwargs))

        return hook

    def _post_hook(self, k: int):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self._record(k, _first_tensor(output))

        return hook

    def use_tokens(self, index: Sequence[Span] | torch.Tensor | None) -> None:
        """Select the visual tokens of the next reads: ``(start, stop)`` spans, a ``[B, T]``
        (or ``[T]``) index tensor, or ``None`` for every token (a student's ``visual_index``)."""
        if isinstance(index, torch.Tensor):
            self.spans, self.token_index = None, index
        else:
            self.spans = [tuple(s) for s in index] if index is not None else None
            self.token_index = None
        self._slices = _merge_spans(self.spans) if self.spans is not None else None

    # -- results ---------------------------------------------------------------------
    def _select(self, stream: torch.Tensor) -> torch.Tensor:
        if self.token_index is not None:
            index = self._device_index(stream.device)
            if index.dim() == 1:
                return stream[:, index]
            gather = index.unsqueeze(-1).expand(-1, -1, stream.shape[-1])
            return torch.gather(stream, 1, gather)
        if self._slices is None:
            return stream
        length = stream.shape[1]
        for _, stop in self._slices:
            if stop > length:
                raise RocketError(
                    f"visual token span ends at {stop} but the sequence has {length} tokens; "
                    "fix the span to match where the model places its image tokens."
                )
        if len(self._slices) == 1:
            start, stop = self._slices[0]
            return stream[:, start:stop]  # a view: no copy
        return torch.cat([stream[:, a:b] for a, b in self._slices], dim=1)

    def _device_index(self, device: torch.device) -> torch.Tensor:
        """``token_index`` on ``device``, copied there once per index tensor, not per layer."""
        index = self.token_index
        assert index is not None
        if index.device == device:
            return index
        cached = self._index_copy
        if cached is None or cached[0] is not index or cached[1].device != device:
            cached = (index, index.to(device, non_blocking=True))
            self._index_copy = cached
        return cached[1]

    @property
    def states(self) -> list[torch.Tensor]:
        """Visual-token states ``[B, T, D]`` per tapped index, in the order given."""
        missing = [k for k in self.indices if k not in self._captured]
        if missing:
            raise RocketError(
                f"no hidden state was captured for layers {missing}; run the model's forward "
                "inside the `with LayerTaps(...)` block before reading `states`."
            )
        return [self._select(self._captured[k]) for k in self.indices]

    def clear(self) -> None:
        """Drop captured states (and their graphs) once the step is done."""
        self._captured.clear()
