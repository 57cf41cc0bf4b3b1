"""parity.compare.assert_close_to_oracle: what it allows, what it rejects, what it says."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch

from parity.compare import assert_close_to_oracle
from parity.tolerances import ERROR_MODELS

FP32 = ERROR_MODELS["fp32"]
U = FP32.unit_roundoff


def _expected():
    return torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)


def test_error_within_floor_passes_and_reports_the_numbers():
    """An error of 7 u x rounding scale passes the 8 u floor; the result says so."""
    expected = _expected()
    result = assert_close_to_oracle(
        expected + 7 * U, expected, error_model=FP32, rounding_scale=1.0
    )
    assert result.passed and result.mismatches == 0 and result.compared == 12
    assert result.max_error == pytest.approx(7 * U, rel=1e-6)
    assert result.worst_ratio == pytest.approx(7 / 8, rel=1e-6)


def test_baseline_error_widens_the_allowance_by_the_factor():
    """An error of 30 u: fails alone (8 u), fails next to a baseline 10 u off (28 u), passes at 20 u (48 u)."""
    expected = _expected()
    actual = expected + 30 * U
    with pytest.raises(AssertionError):
        assert_close_to_oracle(actual, expected, error_model=FP32, rounding_scale=1.0)
    with pytest.raises(AssertionError):
        assert_close_to_oracle(actual, expected, error_model=FP32, rounding_scale=1.0,
                               baseline=expected + 10 * U)  # fmt: skip
    assert_close_to_oracle(actual, expected, error_model=FP32, rounding_scale=1.0,
                           baseline=expected + 20 * U)  # fmt: skip


def test_owner_cap_applies_even_when_the_baseline_is_far_off():
    """A baseline 1e-3 off does not let the candidate past the owner's 1e-4."""
    expected = _expected()
    with pytest.raises(AssertionError, match=re.escape("Absolute cap (owner's bound): 0.0001")):
        assert_close_to_oracle(expected + 2e-4, expected, error_model=FP32,
                               baseline=expected + 1e-3)  # fmt: skip


def test_a_baseline_off_by_more_than_its_own_bound_fails_the_comparison():
    """A baseline 1e-3 off (over the owner's 1e-4) fails even an exact candidate, and says so."""
    expected = _expected()
    with pytest.raises(AssertionError, match="The baseline is off: baseline is itself 1.000e-03"):
        assert_close_to_oracle(expected, expected, error_model=FP32, baseline=expected + 1e-3)


def test_owner_cap_is_not_enforced_where_rounding_alone_allows_more():
    """Floor 8 u x scale = 2.4e-4 > 1e-4: an error of 1.5e-4 passes; at scale 100 (4.8e-5 floor) it fails."""
    expected = _expected()
    over_cap_scale = 3e-4 / (8 * U) / 1.25  # floor 2.4e-4
    assert_close_to_oracle(expected + 1.5e-4, expected, error_model=FP32,
                           rounding_scale=over_cap_scale)  # fmt: skip
    with pytest.raises(AssertionError):
        assert_close_to_oracle(expected + 1.5e-4, expected, error_model=FP32, rounding_scale=100.0,
                               baseline=expected + 1e-4)  # fmt: skip


def test_a_baseline_within_a_floor_over_the_cap_is_not_off():
    """Where the floor is 2.4e-4, a baseline 2e-4 off still vouches (it is within what rounding allows)."""
    expected = _expected()
    over_cap_scale = 3e-4 / (8 * U) / 1.25
    assert_close_to_oracle(expected, expected, error_model=FP32, rounding_scale=over_cap_scale,
                           baseline=expected + 2e-4)  # fmt: skip


def test_the_derived_allowance_replaces_the_formula_and_excludes_a_baseline():
    """allowance= is used as given per element; with a baseline it is refused."""
    expected = _expected()
    rows = torch.tensor([[1e-6], [1e-6], [1e-3]], dtype=torch.float64)
    actual = expected + 1e-4
    with pytest.raises(AssertionError, match="Mismatched elements: 8 / 12"):
        assert_close_to_oracle(actual, expected, error_model=FP32, allowance=rows)
    with pytest.raises(ValueError, match="exclude each other"):
        assert_close_to_oracle(actual, expected, error_model=FP32, allowance=rows,
                               baseline=expected)  # fmt: skip


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_actual_fails_where_the_oracle_is_finite(bad):
    """NaN or inf in the output fails, whatever the allowance."""
    expected = _expected()
    actual = expected.clone()
    actual[1, 2] = bad
    no_cap = dataclasses.replace(FP32, owner_atol=None)
    with pytest.raises(AssertionError, match=r"Mismatched elements: 1 / 12"):
        assert_close_to_oracle(actual, expected, error_model=no_cap, rounding_scale=1e30)


def test_nan_never_equals_nan():
    """NaN on both sides is a mismatch (there is no equal_nan)."""
    expected = _expected()
    expected[0, 0] = math.nan
    with pytest.raises(AssertionError):
        assert_close_to_oracle(expected.clone(), expected, error_model=FP32, rounding_scale=1.0)


def test_where_leaves_elements_out_and_non_finite_baseline_elements_are_not_used():
    """Elements outside ``where`` are not judged; a NaN baseline element does not widen anything."""
    expected = _expected()
    actual = expected.clone()
    actual[0] = math.nan
    keep = torch.ones(3, 1, dtype=torch.bool)
    keep[0] = False
    baseline = expected.clone()
    baseline[2, 3] = math.nan
    result = assert_close_to_oracle(actual, expected, error_model=FP32, baseline=baseline,
                                    where=keep, rounding_scale=1.0)  # fmt: skip
    assert result.compared == 8 and result.baseline_max_error == 0.0


def test_failure_message_says_what_where_how_much_allowed_case_and_reproduction():
    """The message names the legs, the case, the count, the worst index and values, the allowance and the command."""
    expected = _expected()
    actual = expected.clone()
    actual[2, 1] += 5e-4
    actual[0, 3] += 2e-4
    recorded = []
    with pytest.raises(AssertionError) as failure:
        assert_close_to_oracle(
            actual, expected, error_model=FP32, baseline=expected + 1e-6, rounding_scale=1.0,
            case_id="b1-t3-s4-p0-n1g1-h4-causal", reproduce="pytest x.py::t --attention-impl=a:b",
            names=("flash", "standard", "oracle"), on_result=recorded.append,
        )  # fmt: skip
    message = str(failure.value)
    assert message.startswith(
        "flash is not close to the oracle for case b1-t3-s4-p0-n1g1-h4-causal"
    )
    assert "Mismatched elements: 2 / 12 (16.7%)" in message
    assert "Greatest error: 5.000e-04 at index (2, 1)" in message
    assert "allowed there: 2.477e-06" in message  # 2 x 1e-6 + 8 u x 1
    assert "standard's own greatest error: 1.000e-06" in message
    assert "Reproduce: pytest x.py::t --attention-impl=a:b" in message
    assert recorded and recorded[0].legs == "flash-vs-oracle" and not recorded[0].passed


def test_shapes_must_match():
    """Different shapes raise ValueError naming both."""
    with pytest.raises(
        ValueError, match=re.escape("actual shape (3, 4) must equal expected shape (4, 3)")
    ):
        assert_close_to_oracle(torch.zeros(3, 4), torch.zeros(4, 3), error_model=FP32)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_precision_allowance_is_8_units_and_the_standard_does_not_widen_it(dtype):
    """7 u_in x rounding scale passes; 9 u_in fails, even next to a standard 100 u_in off."""
    model = ERROR_MODELS[dtype]
    unit = model.unit_roundoff
    expected = _expected()
    assert_close_to_oracle(expected + 7 * unit, expected, error_model=model, rounding_scale=1.0)
    with pytest.raises(AssertionError, match=re.escape(f"error model '{dtype}'")):
        assert_close_to_oracle(expected + 9 * unit, expected, error_model=model,
                               rounding_scale=1.0, baseline=expected + 100 * unit)  # fmt: skip
