"""``parity.quant_emulation``: dynamic_int8's fully connected layer, computed in float64.

The emulation's agreement with LiteRT's converted files is checked where the
files are (``test_chain_quantized``: each dynamic_int8 leg within its allowance of
the emulated oracle); here, the arithmetic it must do.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from parity.quant_emulation import (
    DynamicInt8Linear,
    emulate_dynamic_int8,
    quantize_rows,
    quantize_weight_blockwise,
    quantize_weight_per_channel,
    row_scheme,
)
from parity.rounding_noise import Fp32RoundingNoise, fp32_rounding_noise


def _rows(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 24, generator=generator, dtype=torch.float64)
    x[0] = x[0].abs()  # a row with no negative value: its range still includes 0
    return x


@pytest.mark.parametrize("scheme", ["asymmetric", "symmetric"])
def test_row_levels_reconstruct_each_element_within_half_a_step(scheme):
    x = _rows()
    levels, scale = quantize_rows(x, scheme)
    assert levels.dtype == torch.int64 and scale.shape == (5, 1)
    assert ((levels * scale - x).abs() <= scale / 2 * (1 + 1e-12)).all()


def test_asymmetric_rows_use_255_steps_from_min_to_max_and_keep_zero_exact():
    x = _rows()
    levels, scale = quantize_rows(x, "asymmetric")
    low, high = x.amin(-1, keepdim=True).clamp(max=0), x.amax(-1, keepdim=True).clamp(min=0)
    assert torch.allclose(scale, (high - low) / 255)
    zero = torch.zeros(1, 24, dtype=torch.float64)
    zero[0, 3] = 1.0
    zero_levels, _ = quantize_rows(zero, "asymmetric")
    assert zero_levels[0, 0] == 0  # 0 is a level: padding and ReLU zeros stay exact


def test_symmetric_rows_map_the_largest_magnitude_to_127():
    x = _rows()
    levels, scale = quantize_rows(x, "symmetric")
    assert torch.equal(levels.abs().amax(-1), torch.full((5,), 127))
    assert torch.allclose(scale, x.abs().amax(-1, keepdim=True) / 127)


def test_weights_are_int8_per_output_channel():
    weight = _rows(1)
    levels, scale = quantize_weight_per_channel(weight)
    assert levels.abs().amax() == 127 and scale.shape == (5, 1)
    assert ((levels * scale - weight).abs() <= scale / 2 * (1 + 1e-12)).all()


def test_linear_is_the_integer_product_of_the_levels_times_both_scales():
    linear = nn.Linear(24, 7).double()
    x = _rows(2)
    emulated = DynamicInt8Linear(linear, "asymmetric")
    w_levels, w_scale = quantize_weight_per_channel(linear.weight.detach())
    x_levels, x_scale = quantize_rows(x, "asymmetric")
    expected = (x_levels @ w_levels.t()).double() * w_scale.t() * x_scale + linear.bias
    assert torch.equal(emulated(x), expected), (emulated(x) - expected).abs().max()
    # ... which is the float product of the dequantized operands.
    dequantized = (x_levels * x_scale) @ (w_levels * w_scale).t() + linear.bias
    assert torch.allclose(emulated(x), dequantized.detach(), rtol=1e-12)


def test_under_rounding_noise_only_the_float_steps_are_perturbed():
    """With inputs far from any rounding boundary the integer product is exact, so a noisy
    run differs from the clean one by the fp32 roundings of its scales (not by the
    error of a K-term float sum)."""
    linear = nn.Linear(24, 7, bias=False).double()  # a bias add would round relative to the sum
    emulated = DynamicInt8Linear(linear, "symmetric")
    x_levels = torch.randint(-127, 128, (5, 24), generator=torch.Generator().manual_seed(3))
    x_levels[:, 0] = 127  # the row maximum: every row's scale is 1 / 127 exactly
    x = x_levels.double() / 127  # every element exactly on a level
    clean = emulated(x)
    with torch.no_grad(), fp32_rounding_noise(Fp32RoundingNoise(seed=0)):
        noisy = emulated(x)
    relative = ((noisy - clean).abs() / clean.abs().clamp(min=1e-3)).max()
    # Three roundings of u: the row scale (max / 127), then the two scalings.
    assert 0 < relative <= 3.001 * torch.finfo(torch.float32).eps / 2


def test_every_linear_is_replaced_and_embeddings_are_rounded_to_int8_rows():
    model = nn.Sequential(nn.Embedding(11, 24), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 3))
    model = model.double()
    original = model[0].weight.detach().clone()
    emulate_dynamic_int8(model, "asymmetric")
    assert [type(m).__name__ for m in model] == [
        "Embedding", "DynamicInt8Linear", "ReLU", "DynamicInt8Linear",
    ]  # fmt: skip
    levels, scale = quantize_weight_per_channel(original)
    assert torch.equal(model[0].weight, levels.double() * scale)


def test_a_model_without_linear_layers_is_refused():
    with pytest.raises(ValueError, match="no nn.Linear"):
        emulate_dynamic_int8(nn.Sequential(nn.ReLU()), "asymmetric")


def test_unknown_row_scheme_is_refused():
    with pytest.raises(ValueError, match="row scheme 'per-tensor'"):
        DynamicInt8Linear(nn.Linear(2, 2), "per-tensor")


def test_scheme_follows_the_kernel_litert_runs():
    assert row_scheme(litert_xnnpack=True) == "asymmetric"
    assert row_scheme(litert_xnnpack=False) == "symmetric"
    assert row_scheme(litert_xnnpack=False, recipe="dynamic_int4_block32") == "asymmetric"


def test_int4_blocks_use_levels_minus_8_to_7_and_bfloat16_scales():
    """dynamic_int4_block32's weights: a scale per block of 32 input columns, max |w| / 7
    rounded to bfloat16 as ai-edge-quantizer stores it."""
    weight = torch.randn(3, 64, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    levels, scale = quantize_weight_blockwise(weight, 32)
    assert levels.shape == (3, 2, 32) and scale.shape == (3, 2, 1)
    assert levels.min() >= -8 and levels.max() <= 7
    assert torch.equal(scale, scale.to(torch.bfloat16).to(torch.float64))
    exact = weight.reshape(3, 2, 32).abs().amax(-1, keepdim=True) / 7
    assert ((scale - exact).abs() <= exact * 2**-8).all()  # bfloat16's half ulp
    # max |w| / scale <= 7 (1 + 2^-8) < 7.5: nothing clips, every element is within half a step.
    assert ((levels * scale - weight.reshape(3, 2, 32)).abs() <= scale * (0.5 + 1e-12)).all()


def test_blockwise_linear_sums_the_scaled_block_products():
    linear = nn.Linear(64, 5).double()
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    emulated = DynamicInt8Linear(linear, "asymmetric", weight_block=32)
    w_levels, w_scale = quantize_weight_blockwise(linear.weight.detach(), 32)
    x_levels, x_scale = quantize_rows(x, "asymmetric")
    dequantized = (x_levels * x_scale) @ (w_levels * w_scale).reshape(5, 64).t() + linear.bias
    assert torch.allclose(emulated(x), dequantized.detach(), rtol=1e-12)


def test_blocks_that_do_not_divide_the_input_are_refused():
    with pytest.raises(ValueError, match="input dimension 48 is not divisible by block size 32"):
        quantize_weight_blockwise(torch.zeros(2, 48), 32)
