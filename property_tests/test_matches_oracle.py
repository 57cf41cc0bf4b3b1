"""The candidate against the float64 oracle, next to litert-torch's standard attention.

fp32 is the gate (owner's 1e-4 cap and the factor-of-standard error model);
huge logits must stay finite and relatively close; fp16 / bf16 are judged with
their own dtype's unit roundoff. Error models: parity/tolerances.py.
"""

from __future__ import annotations

from hypothesis import example, given

from parity.tolerances import ERROR_MODELS
from property_tests.settings import GATE_SETTINGS
from property_tests.strategies import HUGE_LOGIT_SCALES, AttentionCase, attention_cases


@GATE_SETTINGS
@given(case=attention_cases())
def test_candidate_matches_oracle_within_fp32_error_model(gate, case):
    """fp32: within 1e-4 of the oracle and within 2x the standard's own error + 8 u floor."""
    gate.check_against_oracle(case)


@GATE_SETTINGS
@given(case=attention_cases(logits=tuple(HUGE_LOGIT_SCALES)))
def test_candidate_is_finite_and_close_to_standard_at_huge_logits(gate, case):
    """Logits up to ~1e4: no NaN or inf, and within 2x the standard's own error + 8 u floor."""
    gate.check_against_oracle(case, error_model=ERROR_MODELS["fp32-huge-logits"])


@GATE_SETTINGS
@given(case=attention_cases(dtypes=("fp16", "bf16"), logits=("tiny", "unit", "peaky")))
def test_candidate_matches_oracle_in_half_precision(gate, case):
    """fp16 / bf16 inputs: within 2x the standard's own error + 8 u of the dtype."""
    gate.check_against_oracle(case)
