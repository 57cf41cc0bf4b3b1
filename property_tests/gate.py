"""How one attention case is run and judged: candidate, float64 oracle, standard.

``Gate`` is what the property tests use (through the ``gate`` fixture of
``conftest.py``): it calls the attention function under test, the oracle and
litert-torch's standard ``scaled_dot_product_attention`` on a case's inputs,
compares them with ``parity.compare``, records one row per comparison, steers
hypothesis toward the worst error with ``target()``, and on failure says how to
reproduce the case.

litert-torch 0.10's standard deviates from the contract in its softcap path
(``standard_deviation``): ``mask=None`` is not causal there, and a query row
whose keys are all -inf gives NaN. The gate gives the standard what the
contract means where it can, leaves it out where it cannot, records each case
where the deviation applies as a finding row (legs
``standard-as-called-vs-oracle``), and names the deviation in any failure on
such a case, so that litert-torch's SDPA run as the candidate fails with the
deviation named.

Test harness only: with ``PROPERTY_TESTS_EXCLUDE_STANDARD_DEVIATION=1`` in the
environment, examples that would call the candidate where the standard's
deviation applies are rejected (``hypothesis.assume``). It exists so that
property_tests/test_litert_standard.py can show that litert-torch's SDPA passes
everything else; it is not an option for judging a kernel.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Optional

import torch
from hypothesis import assume, settings, target
from litert_torch.generative.layers.scaled_dot_product_attention import (
    scaled_dot_product_attention as standard_attention,
)

from parity.compare import Comparison, assert_close_to_oracle
from parity.impl_loader import accepted_options
from parity.results import STANDARD_AS_CALLED_VS_ORACLE, STANDARD_VS_ORACLE
from parity.oracle import VISIBLE, OracleResult, hull_bounds, reference_attention
from parity.tolerances import ERROR_MODELS, HULL_SLACK_UNITS, ErrorModel, error_model_for
from property_tests.strategies import AttentionCase, explicit_mask, make_inputs

# hypothesis.target() needs a finite number; a ratio this large already means "failed badly".
_TARGET_CAP = 1e9
# Test-only (see the module docstring): reject examples in the standard's deviation.
EXCLUDE_DEVIATION_ENV = "PROPERTY_TESTS_EXCLUDE_STANDARD_DEVIATION"
# litert-torch 0.10's softcap path (scaled_dot_product_attention.py): the mask is
# added only when given (F.sdpa's path passes is_causal=mask is None), and a plain
# F.softmax of an all -inf row is NaN.
NOT_CAUSAL = "litert-torch's softcap path: mask=None is not causal (no mask is added)"
NAN_ROWS = "litert-torch's softcap path: a row whose keys are all -inf gives NaN (softmax), not 0"


class Gate:
    """Runs and judges cases for one test (one pytest node)."""

    def __init__(self, impl: Callable, spec: str, nodeid: str, record: Callable):
        self.impl = impl
        self.spec = spec
        self.nodeid = nodeid
        self.record = record

    def reproduce(self, case: AttentionCase) -> str:
        """The command that reruns this test, and how to pin the case."""
        return (
            f"pytest '{self.nodeid}' --attention-impl={self.spec}"
            f" --hypothesis-profile={settings.get_current_profile_name()}"
            f"  (derandomized profiles rerun the same cases; to pin this one add"
            f" @example(case={case!r}), or use the @reproduce_failure line hypothesis prints)"
        )

    def candidate(self, case: AttentionCase, inputs: dict) -> torch.Tensor:
        """The function under test on ``inputs``, with the case's block sizes.

        Under the test-only EXCLUDE_DEVIATION_ENV, an example that reaches here
        with inputs in the standard's deviation is rejected (hypothesis.assume).
        """
        _reject_if_excluded(inputs)
        blocks = {"q_block_size": case.q_block_size, "kv_block_size": case.kv_block_size}
        return self.impl(**inputs, **accepted_options(self.impl, blocks))

    def check_against_oracle(
        self, case: AttentionCase, error_model: Optional[ErrorModel] = None
    ) -> Comparison:
        """Candidate within ``error_model`` of the oracle, next to the standard's own error.

        Rows whose keys are all -inf must be 0 (the oracle's answer; the
        standard is not required to be finite there: litert's softcap path
        gives NaN). Rows the oracle leaves undetermined (every key masked with
        a finite large negative) must be finite and inside the values' hull.
        """
        inputs = make_inputs(case)
        _reject_if_excluded(inputs)  # before any work or row (candidate() checks again)
        oracle = reference_attention(**inputs)
        given = standard_inputs(case, inputs)
        standard = standard_attention(**given)
        actual = self.candidate(case, inputs)
        error_model = error_model or error_model_for(case.torch_dtype)
        visible = (oracle.row_state == VISIBLE).unsqueeze(-1)
        common = dict(
            error_model=error_model,
            rounding_scale=oracle.rounding_scale,
            where=oracle.determined,
            case_id=case.case_id,
        )
        self._record_standard(case, standard, oracle, visible, common)
        deviation = self._record_deviation(
            case, inputs, standard if given is inputs else None, oracle
        )
        try:
            result = assert_close_to_oracle(
                actual,
                oracle.output,
                baseline=standard,
                baseline_where=visible,
                reproduce=self.reproduce(case),
                names=("candidate", "standard", "oracle"),
                on_result=lambda comparison: self._record(case, comparison, steer=True),
                **common,
            )
        except AssertionError as error:
            if not deviation:
                raise
            raise AssertionError(
                f"{error}\n  Note: litert-torch's standard deviates from the contract on this case"
                f" ({deviation}); a candidate that behaves like it fails here"
            ) from None
        self.check_hull(
            case, actual, inputs["v"], oracle, rows=~oracle.determined, what="undetermined"
        )
        return result

    def check_same(
        self,
        case: AttentionCase,
        actual: torch.Tensor,
        expected: torch.Tensor,
        oracle: OracleResult,
        names: tuple,
        where: Optional[torch.Tensor] = None,
        steer: bool = True,
    ) -> Comparison:
        """Two candidate outputs that must agree (a metamorphic property), within "fp32-self".

        ``oracle`` is the oracle of the inputs ``expected`` came from; its
        rounding scale sets the floor. ``names`` names the two sides, e.g.
        ``("other-blocks", "case-blocks")``. ``steer=False`` skips
        ``hypothesis.target`` (it takes each label once per example: a test
        that compares in a loop targets its worst ratio itself).
        """
        where = oracle.determined if where is None else where & oracle.determined
        return assert_close_to_oracle(
            actual,
            expected.to(torch.float64),
            error_model=ERROR_MODELS["fp32-self"],
            rounding_scale=oracle.rounding_scale,
            where=where,
            case_id=case.case_id,
            reproduce=self.reproduce(case),
            names=(names[0], "", names[1]),
            on_result=lambda comparison: self._record(case, comparison, steer),
        )

    def check_hull(
        self,
        case: AttentionCase,
        actual: torch.Tensor,
        v: torch.Tensor,
        oracle: OracleResult,
        rows: torch.Tensor,
        what: str,
    ) -> None:
        """Each output coordinate on ``rows`` ([B, T, N, 1] bool) lies in its values' hull.

        Slack: HULL_SLACK_UNITS * u * log2(2 + S) * max(|low|, |high|), u of
        the case's dtype (see parity.tolerances). NaN and inf fail.
        """
        if not bool(rows.any()):
            return
        low, high = hull_bounds(v, oracle.hull_keys)
        unit = torch.finfo(case.torch_dtype).eps / 2
        size = torch.maximum(low.abs(), high.abs())
        slack = HULL_SLACK_UNITS * unit * math.log2(2 + case.seq_kv) * size
        actual64 = actual.to(torch.float64)
        outside = torch.maximum(low - actual64, actual64 - high)  # > 0 outside the hull
        outside = torch.where(torch.isfinite(actual64), outside, math.inf)
        outside = torch.where(rows.expand_as(outside), outside, -math.inf)
        excess = outside - slack
        worst = float(excess.max())
        passed = worst <= 0
        self.record(
            suite="property", case_id=case.case_id, model="kernel", legs=f"candidate-in-hull-{what}",
            metric="max_excess_over_hull", value=worst, tolerance=0.0, passed=passed,
            shapes=_shapes(case), seed=case.seed,
        )  # fmt: skip
        ratio = torch.where(outside > 0, outside / slack, 0.0).nan_to_num(posinf=_TARGET_CAP)
        self.steer(float(ratio.max()), f"hull-{what}")
        if not passed:
            index = tuple(int(i) for i in (excess == excess.max()).nonzero()[0])
            raise AssertionError(
                f"candidate leaves the convex hull of the visible values on {what} rows for case"
                f" {case.case_id}\n  {int((excess > 0).sum())} / {int(rows.sum()) * case.head_dim}"
                f" coordinates outside; worst at index {index}: candidate"
                f" {float(actual64[index]):.9g}, hull [{float(low[index]):.9g},"
                f" {float(high[index]):.9g}], slack {float(slack[index]):.3e}"
                f"\n  Reproduce: {self.reproduce(case)}"
            )

    def _record_standard(self, case, standard, oracle, visible, common) -> None:
        """Records the standard's own error (informational: the gate does not judge it)."""
        measured = []
        try:
            assert_close_to_oracle(standard, oracle.output, on_result=measured.append,
                                   **{**common, "where": visible})  # fmt: skip
        except AssertionError:
            pass  # Only the row is wanted; measured[0] holds it either way.
        comparison = measured[0]
        comparison.legs = STANDARD_VS_ORACLE
        self._record(case, comparison, steer=False)

    def _record_deviation(self, case, inputs, as_called, oracle) -> str:
        """Where the standard's deviation applies, records it as called on ``inputs``: a finding.

        ``as_called`` is the standard's output on ``inputs`` if already
        computed, else None. The gate judges the candidate, not the standard,
        so the row has ``passed=True`` (the report's verdict counts failed
        rows) and says in ``details`` which deviation applies and whether the
        standard as called was within the candidate's allowance (it is not,
        where the deviation changes the answer). Returns the deviation, or "".
        """
        deviation = standard_deviation(inputs)
        if not deviation:
            return ""
        if as_called is None:
            as_called = standard_attention(**inputs)
        measured = []
        try:
            assert_close_to_oracle(
                as_called, oracle.output, error_model=error_model_for(case.torch_dtype),
                rounding_scale=oracle.rounding_scale, where=oracle.determined,
                case_id=case.case_id, on_result=measured.append,
            )  # fmt: skip
        except AssertionError:
            pass  # Only the row is wanted; measured[0] holds it either way.
        comparison = measured[0]
        comparison.legs = STANDARD_AS_CALLED_VS_ORACLE
        fields = comparison.record_fields()
        within = "yes" if comparison.passed else "no"
        fields.update(
            passed=True,
            details=f"finding, not judged: {deviation}; within the allowance: {within};"
            f" {fields['details']}",
        )
        self.record(suite="property", model="kernel", shapes=_shapes(case), seed=case.seed,
                    **fields)  # fmt: skip
        return deviation

    def steer(self, ratio: float, label: str) -> None:
        """``hypothesis.target`` on an error / allowed ratio, so search climbs toward failures."""
        target(min(ratio, _TARGET_CAP), label=f"{label} error/allowed")

    def _record(self, case: AttentionCase, comparison: Comparison, steer: bool) -> None:
        self.record(
            suite="property", model="kernel", shapes=_shapes(case), seed=case.seed,
            **comparison.record_fields(),
        )  # fmt: skip
        if steer:
            self.steer(comparison.worst_ratio, comparison.legs)


def standard_deviation(inputs: dict) -> str:
    """Which deviation of litert-torch 0.10's standard from the contract ``inputs`` meet, or "".

    Both are in its softcap path (see NOT_CAUSAL and NAN_ROWS): ``mask=None``
    without an alibi bias (the contract: top-left causal), or a mask with a
    query row whose keys are all -inf (the contract: 0).
    """
    if inputs["softcap"] is None:
        return ""
    mask = inputs["mask"]
    if mask is None:
        return NOT_CAUSAL if inputs["alibi_bias"] is None else ""
    # An alibi bias is finite, so it cannot lift a -inf entry.
    return NAN_ROWS if bool(torch.isneginf(mask).all(dim=-1).any()) else ""


def _reject_if_excluded(inputs: dict) -> None:
    """Test-only: rejects the example if EXCLUDE_DEVIATION_ENV is "1" and the deviation applies."""
    if os.environ.get(EXCLUDE_DEVIATION_ENV) == "1":
        assume(not standard_deviation(inputs))


def standard_inputs(case: AttentionCase, inputs: dict) -> dict:
    """The inputs for litert's standard attention, so that it follows the contract.

    litert-torch 0.10's softcap path only adds the mask when one is given, so
    ``mask=None`` with a softcap is *not* causal there (its F.sdpa path is:
    ``is_causal=mask is None``). Models always pass a mask, so this never
    bites them; here the standard gets the explicit top-left causal mask that
    ``mask=None`` means, or it would be far from the oracle (measured: errors
    up to 0.24) and its error would loosen the candidate's allowance.
    """
    if inputs["mask"] is None and inputs["alibi_bias"] is None and inputs["softcap"] is not None:
        return dict(inputs, mask=explicit_mask(case, inputs))
    return inputs


def _shapes(case: AttentionCase) -> str:
    return (
        f"q[{case.batch},{case.seq_q},{case.num_heads},{case.head_dim}]"
        f" kv[{case.batch},{case.seq_kv},{case.num_kv_heads},{case.head_dim}]"
    )
