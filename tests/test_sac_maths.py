"""The squashed-Gaussian maths of sac_continuous: log-probability, entropy, and where log π lives."""

import math

import numpy as np
import torch
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from sac_continuous import squashed_gaussian_log_prob

# Pre-tanh values up to |u| = 15: tanh(u) rounds to ±1 in float32 beyond |u| ≈ 9, where the naive formula fails.
U = torch.tensor([[0.0, 0.3, -1.2], [2.5, -4.0, 7.0], [9.5, -11.0, 15.0], [-15.0, 12.0, 0.8]], dtype=torch.float64)
MEAN = torch.tensor([[0.1, -0.5, 0.7], [2.0, -3.0, 6.0], [9.0, -10.0, 14.0], [-14.0, 11.5, 0.0]], dtype=torch.float64)
LOG_STD = torch.tensor([[-0.5, 0.2, -1.0], [0.0, -2.0, 0.5], [-0.3, 0.1, -4.0], [1.5, -1.0, -0.2]], dtype=torch.float64)


def torch_reference(u, mean, log_std, transforms):
    """log-prob from torch.distributions; cache_size=1 lets log_prob(y) reuse the exact u instead of atanh(y)."""
    distribution = TransformedDistribution(Normal(mean, log_std.exp()), transforms)
    y = u
    for transform in transforms:
        y = transform(y)
    return distribution.log_prob(y).sum(dim=-1, keepdim=True)


def test_log_prob_matches_torch_transformed_distribution():
    expected = torch_reference(U, MEAN, LOG_STD, [TanhTransform(cache_size=1)])
    ours64 = squashed_gaussian_log_prob(U, MEAN, LOG_STD)
    ours32 = squashed_gaussian_log_prob(U.float(), MEAN.float(), LOG_STD.float())
    assert ours64.shape == (4, 1) and ours32.shape == (4, 1)
    torch.testing.assert_close(ours64, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours32.double(), expected, atol=1e-5, rtol=1e-6)
    assert torch.isfinite(ours32).all()


def test_naive_tanh_correction_breaks_at_these_points():
    """The points above are hard enough: the usual log(1 - tanh(u)² + 1e-6) misses by whole nats there."""
    u = U.float()
    gaussian = Normal(MEAN.float(), LOG_STD.float().exp()).log_prob(u)
    naive = (gaussian - torch.log(1 - torch.tanh(u) ** 2 + 1e-6)).sum(dim=-1, keepdim=True)
    error = (naive.double() - torch_reference(U, MEAN, LOG_STD, [TanhTransform(cache_size=1)])).abs()
    assert error[2:].min() > 1.0
    # The Pendulum page's version applies tanh twice: log(1 - tanh(tanh(u))²) is a different density altogether
    twice = (gaussian - torch.log(1 - torch.tanh(torch.tanh(u)) ** 2 + 1e-7)).sum(dim=-1, keepdim=True)
    assert (twice.double() - squashed_gaussian_log_prob(U, MEAN, LOG_STD)).abs().max() > 1.0


def test_env_space_density_differs_by_the_action_scale_jacobian():
    """log π is the density of the squashed action in (-1, 1)^A. The env's action a = scale * y + bias has
    density log π(y) - Σ log scale; torch's Tanh + Affine transform agrees. Leaving that term out while
    claiming env-space densities is the other mistake of the Pendulum page (scale 2, term log 2)."""
    scale = torch.tensor([2.0, 0.25, 5.0], dtype=torch.float64)
    bias = torch.tensor([1.0, 0.25, -3.5], dtype=torch.float64)
    transforms = [TanhTransform(cache_size=1), AffineTransform(bias, scale, cache_size=1)]
    env_space = torch_reference(U, MEAN, LOG_STD, transforms)
    squashed = squashed_gaussian_log_prob(U, MEAN, LOG_STD)
    torch.testing.assert_close(squashed - scale.log().sum(), env_space, atol=1e-5, rtol=0)


def test_density_integrates_to_one_and_entropy_identity_holds():
    """1-D check by quadrature over y in (-1, 1), independent of sampling, then the blog's entropy identity
    H(Y) = H(X) + E_X[log|det J(X)|] by Monte Carlo against it."""
    mean, log_std = torch.tensor([[0.6]], dtype=torch.float64), torch.tensor([[-0.2]], dtype=torch.float64)
    y = torch.linspace(-1, 1, 2_000_001, dtype=torch.float64)[1:-1, None]
    density = squashed_gaussian_log_prob(torch.atanh(y), mean, log_std).exp()[:, 0].numpy()
    dy = 2 / 2_000_000
    assert abs(density.sum() * dy - 1) < 1e-4
    entropy_quadrature = float(-(density * np.log(np.maximum(density, 1e-300))).sum() * dy)

    torch.manual_seed(0)
    n = 400_000
    x = mean + log_std.exp() * torch.randn(n, 1, dtype=torch.float64)  # X ~ N(μ, σ²)
    log_prob = squashed_gaussian_log_prob(x, mean, log_std)
    entropy_mc = float(-log_prob.mean())  # H(Y) = -E[log p_Y(Y)]
    entropy_x = float(Normal(mean, log_std.exp()).entropy())
    log_det = 2 * (math.log(2) - x - torch.nn.functional.softplus(-2 * x))  # log|d tanh/dx|
    identity = entropy_x + float(log_det.mean())
    standard_error = float(log_prob.std()) / math.sqrt(n)
    assert abs(entropy_mc - entropy_quadrature) < 4 * standard_error + 1e-4
    assert abs(identity - entropy_quadrature) < 4 * standard_error + 1e-4
    assert entropy_quadrature < entropy_x, "squashing into (-1, 1) can only lower the differential entropy"
