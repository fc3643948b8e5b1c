"""ROCKET alignment: the method as a torch-only plug-in.

Attach :class:`LayerTaps` to an unmodified model, build an :class:`Aligner` from an
:class:`AlignConfig` preset, and add ``aligner(taps.states, targets).weighted`` to the
training loss. Nothing here imports anything but torch (scipy is used lazily by
:func:`pair_hungarian` only).
"""

from rocket_vla.align.aligner import Aligner, AlignOutput
from rocket_vla.align.config import PAPER_PAIRS, VARIANTS, AlignConfig
from rocket_vla.align.indices import resolve_layer, resolve_layers
from rocket_vla.align.loss import cosine_distance
from rocket_vla.align.matryoshka import matryoshka_ratios, matryoshka_widths
from rocket_vla.align.pairing import balanced_pairs, balanced_select, pair_hungarian, pair_monotone
from rocket_vla.align.projector import PairProjectors, Projector
from rocket_vla.align.resample import (
    POS_EMBEDS,
    pos_embed_2d,
    resample_teacher,
    sincos_pos_embed_2d,
    student_grid,
    uv_pos_embed_2d,
)
from rocket_vla.align.taps import LayerTaps

__all__ = [
    "PAPER_PAIRS", "POS_EMBEDS", "VARIANTS", "AlignConfig", "AlignOutput", "Aligner", "LayerTaps",
    "PairProjectors", "Projector", "balanced_pairs", "balanced_select", "cosine_distance",
    "matryoshka_ratios", "matryoshka_widths", "pair_hungarian", "pair_monotone", "pos_embed_2d",
    "resample_teacher", "resolve_layer", "resolve_layers", "sincos_pos_embed_2d", "student_grid",
    "uv_pos_embed_2d",
]
