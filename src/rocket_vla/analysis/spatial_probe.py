"""Linear spatial probe: how much 3D position information do visual tokens carry?

A ridge regression from a layer's visual tokens (flattened, standardised on the training
split) to 3D quantities (e.g. the target objects' positions), scored by held-out R^2.
The ridge strength is chosen by k-fold cross-validation on the training split only, so
the held-out score is an honest estimate. The dual (kernel) form is used because token
features are usually far wider than the number of probe samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rocket_vla.errors import RocketError

DEFAULT_ALPHAS: tuple[float, ...] = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)


@dataclass
class ProbeResult:
    r2: float  # held-out R^2, averaged uniformly over target dimensions
    r2_per_dim: list[float]
    alpha: float  # ridge strength picked by cross-validation
    n_train: int
    n_test: int


def _ridge_fit_predict(x: torch.Tensor, y: torch.Tensor, x_new: torch.Tensor, alpha: float) -> torch.Tensor:
    """Ridge prediction in dual form: y_new = x_new x^T (x x^T + alpha I)^-1 y."""
    gram = x @ x.T
    coef = torch.linalg.solve(gram + alpha * torch.eye(len(x), dtype=x.dtype), y)
    return x_new @ (x.T @ coef)


def r2_score(y: torch.Tensor, pred: torch.Tensor, reference_mean: torch.Tensor) -> torch.Tensor:
    """Per-dimension R^2 = 1 - SSE / SST, with SST around ``reference_mean``."""
    sse = ((y - pred) ** 2).sum(0)
    sst = ((y - reference_mean) ** 2).sum(0).clamp_min(1e-12)
    return 1.0 - sse / sst


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


def fit_probe(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    folds: int = 4,
) -> ProbeResult:
    """Fit on the training split (alpha by k-fold CV there), score R^2 on the test split."""
    if len(x_train) < folds or len(x_test) < 2:
        raise RocketError(
            f"the spatial probe needs at least {folds} training and 2 held-out samples, got "
            f"{len(x_train)} and {len(x_test)}; collect more episodes."
        )
    x_train, x_test = (t.flatten(1).double() for t in (x_train, x_test))
    y_train, y_test = y_train.double(), y_test.double()
    order = torch.arange(len(x_train))
    best_alpha, best_score = alphas[0], -float("inf")
    for alpha in alphas:
        scores = []
        for k in range(folds):
            val = order % folds == k
            xt, xv = _standardise(x_train[~val], x_train[val])
            y_mean = y_train[~val].mean(0)
            pred = _ridge_fit_predict(xt, y_train[~val] - y_mean, xv, alpha) + y_mean
            scores.append(r2_score(y_train[val], pred, y_mean).mean().item())
        score = sum(scores) / folds
        if score > best_score:
            best_alpha, best_score = alpha, score
    xt, xv = _standardise(x_train, x_test)
    y_mean = y_train.mean(0)
    pred = _ridge_fit_predict(xt, y_train - y_mean, xv, best_alpha) + y_mean
    per_dim = r2_score(y_test, pred, y_mean)
    return ProbeResult(per_dim.mean().item(), per_dim.tolist(), best_alpha, len(x_train), len(x_test))


def probe_layers(
    x_train: Mapping[int, Any], y_train: Any, x_test: Mapping[int, Any], y_test: Any
) -> dict[int, dict[str, Any]]:
    """:func:`fit_probe` for each layer of ``x_train`` (features ``[N, ...]`` per layer, numpy
    or torch; targets shared by all layers), summarised for a results file: the held-out
    R^2 (4 decimals), the chosen alpha and the sample counts."""
    y_train, y_test = torch.as_tensor(y_train), torch.as_tensor(y_test)
    out = {}
    for k in x_train:
        res = fit_probe(torch.as_tensor(x_train[k]), y_train, torch.as_tensor(x_test[k]), y_test)
        out[k] = {"r2": round(res.r2, 4), "alpha": res.alpha, "n_train": res.n_train, "n_test": res.n_test}
    return out
