"""Sensitivity: attention errors of the size the issue names must fail the checks.

A 1e-5 relative drift of every layer's attention output fails the tiny model's
legs (the quick suite) and SmolLM2's flash leg (the chain); the bisection of
``parity.detection_limits`` brackets a limit between a passing and a failing size.
"""

from __future__ import annotations

import pytest

from parity import detection_limits as D
from parity import legs as L
from parity.zoo import SMOLLM2, TINY_RANDOM

ISSUE_DRIFT = 1e-5  # must fail (issue 8: "a 1e-5 relative drift ... fails both")


@pytest.mark.quick
@pytest.mark.parametrize("leg", [L.STD, L.FLASH])
def test_a_1e_5_drift_of_the_attention_output_fails_the_tiny_model(chains, leg):
    """out * (1 + 1e-5) in every layer: the leg's logit or KV checks fail."""
    chain = chains.get(TINY_RANDOM)
    drifted = D.perturbed_chain(chain, leg, D.Perturbation("relative", ISSUE_DRIFT))
    assert D.leg_fails(drifted, leg)


@pytest.mark.quick
def test_an_unperturbed_leg_passes_and_the_bisection_brackets_a_limit(chains):
    """Size 0 passes; two bisection steps return (passes at, fails at) with passes < fails."""
    chain = chains.get(TINY_RANDOM)
    assert not D.leg_fails(D.perturbed_chain(chain, L.FLASH, D.Perturbation("additive", 0.0)),
                           L.FLASH)  # fmt: skip
    passed_at, failed_at = D.detection_limit(chain, L.FLASH, "additive", (1,), steps=2)
    assert D.LOW <= passed_at < failed_at <= D.HIGH


@pytest.mark.slow
@pytest.mark.xdist_group(SMOLLM2.name)  # on the worker that builds SmolLM2's chain anyway
def test_a_1e_5_drift_of_the_attention_output_fails_smollm2_flash(chains):
    """SmolLM2, flash leg, out * (1 + 1e-5) in every layer: its checks fail."""
    chain = chains.get(SMOLLM2)
    drifted = D.perturbed_chain(chain, L.FLASH, D.Perturbation("relative", ISSUE_DRIFT))
    assert D.leg_fails(drifted, L.FLASH)
