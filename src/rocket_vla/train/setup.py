"""The run's machinery that is not the loop: data order, per-step generators, precision,
the Accelerate object and reading the episodes.

Every source of randomness after initialisation is a function of (seed, step), which is
what lets a resumed run continue exactly (:func:`sample_order`, :func:`step_generator`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rocket_vla.errors import RocketError


def sample_order(n: int, seed: int, start: int, count: int) -> np.ndarray:
    """Samples ``start .. start+count`` of the endless stream of per-epoch permutations."""
    out = np.empty(count, dtype=np.int64)
    filled = 0
    while filled < count:
        epoch, offset = divmod(start + filled, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        take = min(count - filled, n - offset)
        out[filled : filled + take] = perm[offset : offset + take]
        filled += take
    return out


def step_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(np.random.default_rng([seed, step, micro, rank, 7]).integers(2**62)))
    return g


def resolve_precision(setting: str) -> str:
    """``auto``: bf16 on a CUDA device that supports it, else full precision (CPU)."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def make_accelerator(precision: str, handlers: list[Any]) -> Any:
    """An ``Accelerator``; in a single, unlaunched process a second trainer may ask for another
    precision than the first (Accelerate keeps one process-wide state and refuses the change),
    so that state is reset there. Launched runs (several processes) keep theirs untouched."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    try:
        return Accelerator(mixed_precision=precision, kwargs_handlers=handlers)
    except ValueError as err:
        if "already been initialized" not in str(err) or PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(mixed_precision=precision, kwargs_handlers=handlers)


def load_episodes(path: str) -> list[Any]:
    """Episodes of a LIBERO-layout HDF5 file (or folder of them), checked before any work."""
    if not path:
        raise RocketError("no dataset given; pass --dataset PATH to a LIBERO-layout HDF5 file.")
    if not Path(path).exists():
        raise RocketError(f"dataset {path} does not exist; collect one with `rocket collect`.")
    try:
        from rocket_vla.data.episodes import read_episodes
    except ImportError as err:  # pragma: no cover - the data package ships with rocket-vla
        raise RocketError(f"cannot read episodes ({err}); install rocket-vla[io].") from err
    return list(read_episodes(path))


def clip_by_groups(acc: Any, groups: Sequence[Iterable[torch.nn.Parameter]],
                   max_norm: float) -> torch.Tensor:
    """Clip all gradients by their joint norm, computed group by group (policy, aligner).

    The same clip as ``clip_grad_norm_`` over every parameter, up to float rounding, with one
    property that one norm over the concatenation lacks: the joint norm is the ``hypot`` of the
    groups' norms, and ``hypot(n, 0) == n`` exactly, so a run whose aligner gets zero gradients
    (ROCKET at lambda = 0) clips its policy bit for bit as the baseline does -- the invariant
    every comparison with the baseline rests on. Returns the joint norm.
    """
    acc.unscale_gradients()  # fp16 loss scaling, as Accelerate's own clip does first
    params = [[p for p in group if p.grad is not None] for group in groups]
    total = None
    for group in params:
        if group:
            norm = torch.nn.utils.get_total_norm([p.grad for p in group])
            total = norm if total is None else torch.hypot(total, norm)
    if total is None:
        return torch.zeros(())
    torch.nn.utils.clip_grads_with_norm_([p for group in params for p in group], max_norm, total)
    return total


def data_shapes(stats: Any, config_class: type) -> dict[str, int]:
    """The action and proprio widths of the training data, as overrides of the student's config
    fields of those names (a config without such a field keeps its own width).

    Why from the data: a student's head and proprio projection must match what the dataset
    holds, and a LIBERO-shaped default would silently misfit a robot with another arm."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_class)}
    widths = {"action_dim": int(stats.action.low.size), "proprio_dim": int(stats.proprio.low.size)}
    return {k: v for k, v in widths.items() if k in names}


def check_data_shapes(policy: Any, stats: Any) -> None:
    """Refuse a student whose action or proprio width differs from the data's (e.g. one fixed
    by ``--student_config``)."""
    for name, width in (("action", stats.action.low.size), ("proprio", stats.proprio.low.size)):
        own = getattr(policy, f"{name}_dim")
        if own != width:
            raise RocketError(f"the dataset has {width}-dim {name}s but the {policy.kind} student takes "
                              f"{own}; drop --student_config.{name}_dim or train on matching data.")
