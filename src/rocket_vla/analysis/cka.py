"""Linear CKA between every student layer and every teacher layer, in one streaming pass.

What a "sample" is. CKA compares two representations of the same ``n`` examples through
their ``n x n`` Gram matrices. Here an example is one *sample* (one observation), and its
feature vector is the sample's whole visual-token map flattened (``mode="flatten"``):
``K_ij = sum_t <x_it, x_jt>`` over the valid tokens ``t``. Why per sample and flattened:
student token ``p`` and resampled teacher token ``p`` look at the same image region (that
is the correspondence the alignment loss itself uses), so keeping the token axis in the
feature vector keeps the spatial layout a 3D teacher is about, while a token-level Gram
(``(B*T)^2`` entries) or a feature-space cross-covariance (``Ds*Dt`` per layer pair) would
grow with tokens or width. ``mode="mean"`` (mean-pooled tokens) is offered for students
whose token sets do not correspond to the teacher grid; it discards the layout.

Why streaming by minibatch. A Gram entry needs two samples at once, so an exact
``n x n`` Gram over 2k samples would have to keep every sample's features (for a 7B
student: 2k x 256 tokens x 4096 x 33 layers). Instead each batch of ``b`` samples gives
``b x b`` Grams per layer, from which we take HSIC for every (student, teacher) layer pair
and for every layer with itself, and accumulate only those scalars. CKA is then
``mean HSIC(K, L) / sqrt(mean HSIC(K, K) * mean HSIC(L, L))`` (Nguyen, Raghu & Kornblith,
2021). Memory is ``O(b^2 * layers + S * T)``: independent of samples, tokens and width
beyond the batch the models already hold.

Why debiased is the default. The unbiased HSIC estimator (Song et al., 2012) has
expectation equal to the population HSIC for any batch size, so averaging it over batches
converges to the population CKA. The biased (centred-Gram) estimator is off by
``O(1/b)``, and averaging more batches does not remove that: for independent
high-dimensional features it reports clearly positive CKA where the truth is 0. It needs
``b >= 4`` samples per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from rocket_vla.errors import RocketError

FeatureMode = Literal["flatten", "mean"]
Estimator = Literal["debiased", "biased"]
MIN_SAMPLES = {"debiased": 4, "biased": 2}


# --- Gram matrices and HSIC ------------------------------------------------------------
def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def sample_gram(
    features: torch.Tensor, mask: torch.Tensor | None = None, mode: FeatureMode = "flatten"
) -> torch.Tensor:
    """Linear Gram ``[B, B]`` (float64) of per-sample features.

    ``features`` is ``[B, T, D]`` (visual tokens) or ``[B, D]``; ``mask`` ``[B, T]`` marks
    valid tokens (padding excluded). ``flatten``: inner product of the whole token maps,
    padded tokens counting as zeros; ``mean``: inner product of the mean valid token.
    """
    x = features.to(_work_dtype(features))
    if x.dim() == 2:
        return (x @ x.T).double()
    if x.dim() != 3:
        raise RocketError(
            f"CKA features must be [B, T, D] or [B, D], got shape {tuple(features.shape)}."
        )
    if mask is not None:
        m = mask.to(device=x.device, dtype=torch.bool)
        x = torch.where(m[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
    if mode == "flatten":
        flat = x.reshape(x.shape[0], -1)
        return (flat @ flat.T).double()
    if mode == "mean":
        count = (
            mask.to(x.dtype).sum(dim=1, keepdim=True).clamp_min(1.0)
            if mask is not None
            else torch.full((x.shape[0], 1), float(x.shape[1]), dtype=x.dtype, device=x.device)
        )
        pooled = x.sum(dim=1) / count
        return (pooled @ pooled.T).double()
    raise RocketError(f"unknown CKA feature mode {mode!r}; use 'flatten' or 'mean'.")


def _check_n(n: int, estimator: str) -> None:
    need = MIN_SAMPLES[estimator]
    if n < need:
        raise RocketError(
            f"the {estimator} CKA estimator needs at least {need} samples per batch, got {n}; "
            "use more samples or a larger batch."
        )


def _centre(gram: torch.Tensor) -> torch.Tensor:
    """``H K H`` with ``H = I - 11^T/n`` for a stack of Grams ``[..., n, n]``."""
    gram = gram - gram.mean(dim=-1, keepdim=True)
    return gram - gram.mean(dim=-2, keepdim=True)


def hsic_matrix(
    grams_x: torch.Tensor, grams_y: torch.Tensor, estimator: Estimator = "debiased"
) -> torch.Tensor:
    """HSIC between every Gram in ``grams_x [P, n, n]`` and every one in ``grams_y [Q, n, n]``.

    Returns ``[P, Q]``. ``biased``: ``tr(K H L H) / (n-1)^2``. ``debiased``: the unbiased
    estimator with zeroed diagonals,
    ``[tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))``.
    """
    n = grams_x.shape[-1]
    _check_n(n, estimator)
    gx, gy = grams_x.double(), grams_y.double()
    if estimator == "biased":
        cx, cy = _centre(gx), _centre(gy)
        return cx.reshape(len(cx), -1) @ cy.reshape(len(cy), -1).T / (n - 1) ** 2
    if estimator != "debiased":
        raise RocketError(f"unknown CKA estimator {estimator!r}; use 'debiased' or 'biased'.")
    eye = torch.eye(n, dtype=torch.bool, device=gx.device)
    kx = gx.masked_fill(eye, 0.0)
    ky = gy.masked_fill(eye, 0.0)
    trace = kx.reshape(len(kx), -1) @ ky.reshape(len(ky), -1).T  # symmetric Grams
    row_x, row_y = kx.sum(dim=-1), ky.sum(dim=-1)  # K~ 1: [P, n], [Q, n]
    sums = row_x.sum(dim=-1)[:, None] * row_y.sum(dim=-1)[None, :]
    cross = row_x @ row_y.T
    return (trace + sums / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


def _hsic_diag(grams: torch.Tensor, estimator: Estimator) -> torch.Tensor:
    """HSIC of each Gram with itself, ``[P]``, without forming the ``P x P`` matrix."""
    return torch.stack([hsic_matrix(g[None], g[None], estimator)[0, 0] for g in grams])


def _ratio(cross: torch.Tensor, self_x: torch.Tensor, self_y: torch.Tensor) -> torch.Tensor:
    """``cross / sqrt(self_x self_y)``; NaN where a self-HSIC is not positive (no signal)."""
    denom = (self_x[:, None] * self_y[None, :]).clamp_min(0.0).sqrt()
    nan = torch.full_like(cross, float("nan"))
    return torch.where(denom > 0, cross / denom.clamp_min(1e-300), nan)


def cka_from_grams(k: torch.Tensor, l: torch.Tensor, estimator: Estimator = "debiased") -> float:
    """Linear CKA of two ``n x n`` Gram matrices over the same samples."""
    cross = hsic_matrix(k[None], l[None], estimator)
    return float(_ratio(cross, _hsic_diag(k[None], estimator), _hsic_diag(l[None], estimator))[0, 0])


def linear_cka(x: torch.Tensor, y: torch.Tensor, estimator: Estimator = "debiased") -> float:
    """Direct linear CKA of features ``x [n, dx]`` and ``y [n, dy]`` (rows = samples)."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise RocketError(
            f"linear_cka needs [n, dx] and [n, dy] with the same n, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}."
        )
    return cka_from_grams(sample_gram(x), sample_gram(y), estimator)


# --- the streaming accumulator -----------------------------------------------------------
@dataclass
class CKAResult:
    """CKA maps ``[student layers, teacher layers]`` under both estimators."""

    student_layers: list[int]
    teacher_layers: list[int]
    debiased: torch.Tensor
    biased: torch.Tensor
    num_samples: int
    num_batches: int
    mode: str

    def matrix(self, estimator: Estimator = "debiased") -> torch.Tensor:
        return self.debiased if estimator == "debiased" else self.biased

    def to_dict(self) -> dict[str, Any]:
        def clean(m: torch.Tensor) -> list[list[float | None]]:
            return [[None if v != v else float(v) for v in row] for row in m.tolist()]

        return {
            "student_layers": self.student_layers,
            "teacher_layers": self.teacher_layers,
            "debiased": clean(self.debiased),
            "biased": clean(self.biased),
            "num_samples": self.num_samples,
            "num_batches": self.num_batches,
            "mode": self.mode,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CKAResult:
        def tensor(rows: list[list[float | None]]) -> torch.Tensor:
            return torch.tensor([[float("nan") if v is None else v for v in r] for r in rows],
                                dtype=torch.float64)

        return cls(list(data["student_layers"]), list(data["teacher_layers"]),
                   tensor(data["debiased"]), tensor(data["biased"]),
                   int(data["num_samples"]), int(data["num_batches"]), str(data["mode"]))


@dataclass
class StreamingCKA:
    """Accumulates per-batch HSIC for every (student layer, teacher layer) pair.

    Call :meth:`update` once per batch with the student's visual-token states (one
    ``[B, T, Ds]`` per student layer, e.g. ``LayerTaps.states``) and the teacher's features
    on the same samples (one ``[B, T', Dt]`` per teacher layer, e.g. resampled with
    ``resample_teacher``), then :meth:`compute`. Both estimators are accumulated at once:
    the Grams are the expensive part and are shared.
    """

    student_layers: list[int]
    teacher_layers: list[int]
    mode: FeatureMode = "flatten"
    _cross: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _self_x: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _self_y: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    num_samples: int = 0
    num_batches: int = 0

    def __post_init__(self) -> None:
        if not self.student_layers or not self.teacher_layers:
            raise RocketError("CKA needs at least one student and one teacher layer.")
        s, t = len(self.student_layers), len(self.teacher_layers)
        for est in ("debiased", "biased"):
            self._cross[est] = torch.zeros(s, t, dtype=torch.float64)
            self._self_x[est] = torch.zeros(s, dtype=torch.float64)
            self._self_y[est] = torch.zeros(t, dtype=torch.float64)

    @torch.no_grad()
    def update(
        self,
        student: Sequence[torch.Tensor],
        teacher: Sequence[torch.Tensor],
        student_mask: torch.Tensor | None = None,
        teacher_mask: torch.Tensor | None = None,
    ) -> None:
        """Add one batch; ``*_mask`` ``[B, T]`` marks valid tokens (True = keep)."""
        if len(student) != len(self.student_layers) or len(teacher) != len(self.teacher_layers):
            raise RocketError(
                f"expected {len(self.student_layers)} student and {len(self.teacher_layers)} "
                f"teacher tensors, got {len(student)} and {len(teacher)}; pass one per layer."
            )
        sizes = {int(x.shape[0]) for x in [*student, *teacher]}
        if len(sizes) != 1:
            raise RocketError(
                f"student and teacher tensors disagree on the batch size ({sorted(sizes)}); "
                "pass the same samples to both."
            )
        n = sizes.pop()
        _check_n(n, "debiased")
        kx = torch.stack([sample_gram(x, student_mask, self.mode).cpu() for x in student])
        ky = torch.stack([sample_gram(y, teacher_mask, self.mode).cpu() for y in teacher])
        for est in ("debiased", "biased"):
            self._cross[est] += hsic_matrix(kx, ky, est)
            self._self_x[est] += _hsic_diag(kx, est)
            self._self_y[est] += _hsic_diag(ky, est)
        self.num_samples += n
        self.num_batches += 1

    def compute(self) -> CKAResult:
        if self.num_batches == 0:
            raise RocketError("no batch was added to the CKA accumulator; call update() first.")
        maps = {
            est: _ratio(self._cross[est], self._self_x[est], self._self_y[est])
            for est in ("debiased", "biased")
        }
        return CKAResult(list(self.student_layers), list(self.teacher_layers), maps["debiased"],
                         maps["biased"], self.num_samples, self.num_batches, self.mode)


def batch_sizes(num_samples: int, batch_size: int, minimum: int = MIN_SAMPLES["debiased"]) -> list[int]:
    """Split ``num_samples`` into near-equal batches of about ``batch_size``, each >= minimum.

    Why not a short last batch: every batch must reach the debiased estimator's minimum,
    and near-equal batches give the per-batch HSIC terms near-equal variance. A batch
    exceeds ``batch_size`` only when the remainder could not form a batch of its own.
    """
    if num_samples < minimum:
        raise RocketError(
            f"CKA needs at least {minimum} samples for the debiased estimator, got "
            f"{num_samples}; raise --samples."
        )
    if batch_size < minimum:
        raise RocketError(
            f"the CKA batch size must be at least {minimum} for the debiased estimator, got "
            f"{batch_size}; raise --batch_size."
        )
    count = max(1, min(-(-num_samples // batch_size), num_samples // minimum))
    base, extra = divmod(num_samples, count)
    return [base + (1 if i < extra else 0) for i in range(count)]
