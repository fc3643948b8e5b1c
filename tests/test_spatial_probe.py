"""The spatial probe against closed-form ridge and known signal/no-signal cases."""

import torch

from rocket_vla.analysis.spatial_probe import _ridge_fit_predict, fit_probe


def test_dual_ridge_equals_primal_closed_form() -> None:
    g = torch.Generator().manual_seed(0)
    x, y, xn = (torch.randn(20, 7, generator=g, dtype=torch.float64),
                torch.randn(20, 2, generator=g, dtype=torch.float64),
                torch.randn(5, 7, generator=g, dtype=torch.float64))
    w = torch.linalg.solve(x.T @ x + 3.0 * torch.eye(7, dtype=torch.float64), x.T @ y)
    torch.testing.assert_close(_ridge_fit_predict(x, y, xn, 3.0), xn @ w)


def test_linear_signal_scores_high_and_noise_scores_near_zero() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 30, generator=g)
    w = torch.randn(30, 3, generator=g)
    y = x @ w + 0.05 * torch.randn(200, 3, generator=g)
    good = fit_probe(x[:150], y[:150], x[150:], y[150:])
    assert good.r2 > 0.95
    noise = torch.randn(200, 3, generator=g)
    bad = fit_probe(x[:150], noise[:150], x[150:], noise[150:])
    assert bad.r2 < 0.1
