"""parity.rounding_noise: the fp32 rounding errors it adds to a float64 computation.

Its error model must be the size fp32 rounding really is (or larger: the
allowance is built on it) and must refuse operations it has no model for.
"""

from __future__ import annotations

import math

import pytest
import torch

from parity.exact_random import exact_generator, normal
from parity.rounding_noise import (
    U32,
    Fp32RoundingNoise,
    UnmodelledOperationError,
    fp32_rounding_noise,
)
from parity.tolerances import SPREAD_Z

pytestmark = pytest.mark.quick


def _values(shape, seed=0) -> torch.Tensor:
    return normal(shape, exact_generator(seed)).to(torch.float64)


def _noisy(fn, *args, seed=1):
    with torch.no_grad(), fp32_rounding_noise(Fp32RoundingNoise(seed)):
        return fn(*args)


def test_a_product_gets_one_uniform_rounding_of_at_most_u():
    """x * y inside the mode is off by at most u relative, with rms u / sqrt(3)."""
    x, y = _values((100_000,), 1), _values((100_000,), 2)
    relative = (_noisy(torch.mul, x, y) - x * y) / (x * y)
    assert float(relative.abs().max()) <= U32 * (1 + 1e-9)
    # rms of U(u) is u / sqrt(3); its standard error over n draws is < 1 % here.
    assert float(relative.square().mean().sqrt()) == pytest.approx(U32 / math.sqrt(3), rel=0.02)


def test_a_dot_product_error_has_the_variance_of_one_accumulator_along_k():
    """mm's added error, over 4096 outputs, has the predicted standard deviation."""
    a, b = _values((4096, 256), 3), _values((256, 1), 4)
    y = a @ b
    terms = a.square() @ b.square()
    predicted = (U32**2 / 3 * (256 * (terms / 6 + y.square() / 3) + terms)).sqrt()
    standardized = (_noisy(torch.mm, a, b) - y) / predicted
    # Standard normal by construction: the sd of 4096 draws is 1 +- 1.1 % (1 SE).
    assert float(standardized.std()) == pytest.approx(1.0, abs=0.06)


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda a, b: a @ b, id="matmul-k576"),
        pytest.param(lambda a, b: a.sum(-1), id="sum-576"),
        pytest.param(lambda a, b: torch.softmax(4 * a, dim=-1), id="softmax"),
        pytest.param(lambda a, b: torch.nn.functional.silu(a), id="silu"),
        pytest.param(lambda a, b: torch.rsqrt(a.square().mean(-1) + 1e-5), id="rms-norm-scale"),
        pytest.param(lambda a, b: torch.exp(a), id="exp"),
    ],
)
def test_torch_fp32_stays_inside_the_allowance_the_noise_model_gives(operation):
    """The real fp32 result of each op lies within m + z s of the noisy float64 samples."""
    a, b = _values((64, 576), 5), _values((576, 64), 6)
    exact = operation(a, b)
    actual = operation(a.float(), b.float()).double()
    samples = torch.stack([_noisy(operation, a, b, seed=seed) for seed in range(8)]) - exact
    rows = samples.flatten(1).square()
    allowance = rows.amax(1).mean().sqrt() + SPREAD_Z * rows.mean(0).amax().sqrt()
    assert float((actual - exact).abs().max()) <= float(allowance)


def test_data_movement_is_exact():
    """Views, cat, index_copy and embedding leave every bit as it was."""
    x = _values((4, 6), 7)

    def move(x):
        moved = torch.cat([x.t().reshape(6, 4), x[:, :4]])
        return moved.index_copy(0, torch.tensor([0, 1]), x[:2, :4])

    assert torch.equal(_noisy(move, x), move(x))


def test_the_same_seed_gives_the_same_noise_and_another_seed_other_noise():
    """Noise is a function of the seed (the generator is torch.rand's, CPU-independent)."""
    x = _values((1000,), 8)
    assert torch.equal(_noisy(torch.exp, x, seed=3), _noisy(torch.exp, x, seed=3))
    assert not torch.equal(_noisy(torch.exp, x, seed=3), _noisy(torch.exp, x, seed=4))


def test_an_operation_without_an_error_model_is_refused():
    """cumsum has no error model: the mode raises instead of leaving it exact."""
    with pytest.raises(UnmodelledOperationError, match="cumsum"):
        _noisy(torch.cumsum, _values((10,), 9), 0)


def test_safe_softmax_of_a_fully_masked_row_is_zero():
    """A row whose keys are all -inf gives 0 inside the mode, as torch's SDPA does."""
    scores = torch.full((1, 1, 2, 3), -math.inf, dtype=torch.float64)
    scores[0, 0, 0] = 0.0
    value = torch.ones(1, 1, 3, 2, dtype=torch.float64)

    def attend(scores):
        return torch.nn.functional.scaled_dot_product_attention(
            torch.zeros(1, 1, 2, 2, dtype=torch.float64), torch.zeros(1, 1, 3, 2,
            dtype=torch.float64), value, attn_mask=scores)  # fmt: skip

    out = _noisy(attend, scores)
    assert torch.equal(out[0, 0, 1], torch.zeros(2, dtype=torch.float64))
    assert float((out[0, 0, 0] - 1).abs().max()) < 10 * U32
