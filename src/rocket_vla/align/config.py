"""The alignment configuration and the paper's five variants as presets of it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from rocket_vla.align.indices import resolve_layers
from rocket_vla.align.matryoshka import matryoshka_widths
from rocket_vla.align.pairing import balanced_pairs
from rocket_vla.align.resample import POS_EMBEDS
from rocket_vla.dictconfig import DictConfig
from rocket_vla.errors import RocketError

ProjectorKind = Literal["none", "shared", "independent"]
VARIANTS = ("baseline", "spatial_forcing", "naive", "shared", "rocket")

# The paper's pairs in the project's index convention (hidden-state index k = after
# block k). Teacher indices are the official 0-based VGGT block indices plus one (VGGT's
# aggregator returns block outputs). Student indices are converted from the index
# convention of the trainer that produced each paper setting:
#
# * OpenVLA-OFT (openvla-ROCKET/vla-scripts/finetune_rocket.py): transformers'
#   ``hidden_states`` tuple, so ``k`` carries over; its "-1" indexed the tuple of block
#   outputs only, i.e. block 31 -- "openvla-official" -- where "openvla" is the stated intent.
# * pi0 (openpi-ROCKET JAX trainer, src/openpi/models/gemma.py + pi0_align.py): the scanned
#   block returns its *output*, so official ``k`` = output of block k+1 = our ``k + 1``, and
#   "-1" = output of the last block, before the final norm (our 18, read at the norm's input).
# * pi0.5 (openpi-ROCKET PyTorch trainer, src/openpi/models_pytorch/gemma_pytorch.py +
#   pi0_align_pytorch.py): ``all_hidden_states[k]`` is the *input* of block k, so official
#   ``k`` = our ``k``; "-1" is appended *after* the final norm (the pi05 student's
#   ``final_path`` taps the normed stream, see policies/pi05.py).
PAPER_PAIRS: dict[str, tuple[list[int], list[int]]] = {
    # OpenVLA-7B (Llama-2, 32 blocks) <-> VGGT (24 blocks)
    "openvla": ([2, 4, 6, 8, 10, 12, 14, 16, 18, 32], [3, 5, 7, 9, 11, 13, 15, 17, 19, 24]),
    "openvla-official": ([2, 4, 6, 8, 10, 12, 14, 16, 18, 31], [3, 5, 7, 9, 11, 13, 15, 17, 19, 24]),
    # pi0 / PaliGemma (Gemma, 18 blocks) <-> VGGT; official "2,3,...,10,-1" in the JAX trainer
    "pi0": ([3, 4, 5, 6, 7, 8, 9, 10, 11, 18], [3, 5, 7, 9, 11, 13, 15, 17, 19, 24]),
    # pi0.5 / PaliGemma <-> VGGT; official "2,3,...,10,-1" in the PyTorch trainer (18 = normed)
    "pi05": ([2, 3, 4, 5, 6, 7, 8, 9, 10, 18], [3, 5, 7, 9, 11, 13, 15, 17, 19, 24]),
}
# Spatial Forcing's single pair <-> teacher last: OpenVLA "24" (tuple index, = ours), pi0 "12"
# in the JAX trainer (output of block 13 = our 13), pi0.5 "12" in the PyTorch trainer (= ours).
PAPER_SF_LAYER: dict[str, int] = {"openvla": 24, "openvla-official": 24, "pi0": 13, "pi05": 12}


@dataclass
class AlignConfig(DictConfig):
    """Everything the :class:`~rocket_vla.align.Aligner` needs; presets fill it in.

    Layer lists use the project index convention (``indices.py``) and are paired
    position by position. ``student_depth``/``teacher_depth`` (number of blocks) enable
    range checks and negative indices; leave them ``None`` to skip both.
    """

    CONFIG_WHAT = "alignment"

    variant: str = "custom"
    student_layers: list[int] = field(default_factory=list)
    teacher_layers: list[int] = field(default_factory=list)
    student_dim: int = 0
    teacher_dim: int = 0
    #: projector hidden width H; ``None`` = the teacher width (the official ``AlignProjector``
    #: default ``2 * vggt_dim`` = 2048, the width of VGGT's concatenated frame+global features,
    #: for every student). The one place this default lives: training configs pass ``None`` on.
    hidden_dim: int | None = None
    projector: ProjectorKind = "shared"
    matryoshka: bool = False
    matryoshka_ratios: list[float] | None = None
    layernorm: bool = True
    ensemble: int = 1
    weight: float = 0.5
    pos_embed_scale: float = 0.1
    #: position embedding added to teacher targets before resampling: "sincos" (MAE-style on
    #: integer patch positions) or "vggt-uv" (VGGT's own, which the official code adds).
    #: Presets with a paper ``layout`` use "vggt-uv"; why: docs/position_embedding.md.
    #: Configs saved before this field existed load as "sincos", what they ran.
    pos_embed: str = "sincos"
    student_depth: int | None = None
    teacher_depth: int | None = None

    def __post_init__(self) -> None:
        if self.hidden_dim is None and self.teacher_dim > 0:
            self.hidden_dim = self.teacher_dim

    # -- derived ---------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """False for the baseline: no projector is built and no teacher is needed."""
        return self.projector != "none"

    @property
    def num_pairs(self) -> int:
        return len(self.student_layers)

    def resolved(self) -> AlignConfig:
        """A copy with negative indices resolved against the depths (validated)."""
        self.validate()
        cfg = dataclasses.replace(self)
        if self.student_depth is not None:
            cfg.student_layers = resolve_layers(self.student_layers, self.student_depth,
                                                what="student layer")
        if self.teacher_depth is not None:
            cfg.teacher_layers = resolve_layers(self.teacher_layers, self.teacher_depth,
                                                what="teacher layer")
        return cfg

    def widths(self) -> list[int] | None:
        """Active projector width per pair, or ``None`` when every pair uses all of it."""
        if not self.matryoshka:
            return None
        return matryoshka_widths(self.hidden_dim, self.num_pairs, ratios=self.matryoshka_ratios)

    def validate(self) -> None:
        """Raise a one-sentence :class:`RocketError` for the first problem found."""
        if self.pos_embed not in POS_EMBEDS:
            raise RocketError(
                f"unknown position embedding {self.pos_embed!r}; set pos_embed to one of "
                f"{', '.join(repr(k) for k in POS_EMBEDS)}."
            )
        if self.projector not in ("none", "shared", "independent"):
            raise RocketError(
                f"unknown projector kind {self.projector!r}; use 'none', 'shared' or 'independent'."
            )
        if not self.enabled:
            return
        if len(self.student_layers) != len(self.teacher_layers):
            raise RocketError(
                f"{len(self.student_layers)} student layers but {len(self.teacher_layers)} "
                "teacher layers; give one teacher layer per student layer."
            )
        if not self.student_layers:
            raise RocketError("no layer pairs are configured; give student and teacher layers.")
        if self.student_dim < 1 or self.teacher_dim < 1 or (self.hidden_dim or 0) < 1:
            raise RocketError(
                "student_dim, teacher_dim and hidden_dim must be positive; set them to the "
                "models' hidden sizes."
            )
        if self.ensemble < 1:
            raise RocketError(f"ensemble must be at least 1, got {self.ensemble}.")
        student = self.student_layers
        teacher = self.teacher_layers
        if self.student_depth is not None:
            student = resolve_layers(student, self.student_depth, what="student layer")
        if self.teacher_depth is not None:
            teacher = resolve_layers(teacher, self.teacher_depth, what="teacher layer")
        if self.matryoshka:
            if self.projector != "shared":
                raise RocketError(
                    "Matryoshka widths need the shared projector; per-pair projectors always "
                    "use their full width (set projector='shared' or matryoshka=False)."
                )
            for name, layers in (("student", student), ("teacher", teacher)):
                if any(b <= a for a, b in zip(layers, layers[1:], strict=False)):
                    raise RocketError(
                        f"Matryoshka assigns widths by depth, so {name} layers must be strictly "
                        f"ascending, got {layers}; sort the pairs by depth."
                    )
            self.widths()  # validates explicit ratios

    # -- presets ---------------------------------------------------------------------
    @classmethod
    def preset(
        cls,
        variant: str,
        *,
        student_dim: int = 0,
        teacher_dim: int = 0,
        student_depth: int | None = None,
        teacher_depth: int | None = None,
        student_layers: list[int] | None = None,
        teacher_layers: list[int] | None = None,
        layout: str | None = None,
        num_pairs: int = 10,
        **overrides: Any,
    ) -> AlignConfig:
        """One of the paper's five variants, as a configuration of the one code path.

        Pairs come from, in order: explicit ``student_layers``/``teacher_layers``; the
        paper's pairs for ``layout`` (a key of ``PAPER_PAIRS``); else the balanced selection of
        ``num_pairs`` for the given depths. Spatial Forcing uses one pair with the last
        teacher layer; its student layer is the one given, else the paper's for ``layout``
        (``PAPER_SF_LAYER``: 24 of 32 for OpenVLA, 13 / 12 of 18 for pi0 / pi0.5), else the one at 3/4
        of ``student_depth``. A paper ``layout`` also selects the paper's position embedding,
        ``pos_embed="vggt-uv"``; without one it stays ``"sincos"`` (override either way).
        """
        if variant not in VARIANTS:
            raise RocketError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
        if layout is not None and layout not in PAPER_PAIRS:
            raise RocketError(f"unknown layout {layout!r}; choose one of {', '.join(PAPER_PAIRS)}.")
        base = dict(variant=variant, student_dim=student_dim, teacher_dim=teacher_dim,
                    student_depth=student_depth, teacher_depth=teacher_depth)
        if variant == "baseline":
            cfg = cls(**base, projector="none", weight=0.0)
            return dataclasses.replace(cfg, **overrides)
        if variant == "spatial_forcing":
            if student_layers is None:
                if layout is not None:
                    student_layers = [PAPER_SF_LAYER[layout]]
                elif student_depth is not None:
                    student_layers = [max(1, round(0.75 * student_depth))]
                else:
                    raise RocketError(
                        "spatial_forcing needs student_layers or student_depth to place its pair."
                    )
            teacher_layers = teacher_layers if teacher_layers is not None else [-1]
        elif student_layers is None or teacher_layers is None:
            if layout is not None:
                student_layers, teacher_layers = (list(x) for x in PAPER_PAIRS[layout])
            elif student_depth is not None and teacher_depth is not None:
                student_layers, teacher_layers = balanced_pairs(
                    student_depth, teacher_depth, num_pairs
                )
            else:
                raise RocketError(
                    f"{variant} needs layer pairs: give student_layers and teacher_layers, "
                    "a layout, or both depths for the balanced selection."
                )
        projector: ProjectorKind = "independent" if variant in ("spatial_forcing", "naive") else "shared"
        cfg = cls(**base, student_layers=list(student_layers), teacher_layers=list(teacher_layers),
                  projector=projector, matryoshka=variant == "rocket",
                  pos_embed="vggt-uv" if layout is not None else "sincos")
        cfg = dataclasses.replace(cfg, **overrides)
        cfg.validate()
        return cfg

