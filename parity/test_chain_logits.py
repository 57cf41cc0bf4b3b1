"""Chain suite, logits: every leg against the float64 oracle at every prefill position
and every decode step, and flash against standard within the owner's bound.
The chunked legs (prompt prefilled in chunks, ``parity.chunked``) are judged
exactly like their one-shot legs, against the same one-shot oracle: chunking
does not change the exact math.

Legs, tolerances and diagnosis: ``parity.legs``, ``parity.tolerances`` (end-to-end
section), ``parity.checks``. A failure names the case, the leg, the worst logit,
the first divergent token with the top-2 margins there, and the first layer over budget.
"""

from __future__ import annotations

import pytest

from parity import legs as L
from parity.cases import leg_cases
from parity.checks import check_flash_vs_standard, check_logits


def _check(chains, case, stage, record_result, judge):
    chain = chains.get(case.model)
    runs = chain.runs(case.prompt, [case.leg])
    return check_logits(
        runs, case.leg, stage, spread=chain.spread(case.prompt), case_id=case.case_id,
        model=case.model.name, record=record_result,
        token_text=lambda token: chain.prepared.decode([token]), judge=judge,
    )  # fmt: skip


@pytest.mark.parametrize("case", leg_cases(L.ALL_LEGS + L.CHUNKED_LEGS))
def test_prefill_logits_match_oracle_at_every_position(case, chains, record_result, judge):
    """Prefill logits (T, V) of the leg are within its error model of the float64 oracle."""
    _check(chains, case, "prefill", record_result, judge)


@pytest.mark.parametrize("case", leg_cases(L.ALL_LEGS + L.CHUNKED_LEGS))
def test_decode_step_logits_match_oracle(case, chains, record_result, judge):
    """The logits of every decode step (fed the oracle's tokens) are within the error model."""
    _check(chains, case, "decode", record_result, judge)


@pytest.mark.parametrize(
    "case", leg_cases([L.FLASH, L.TFLITE_FLASH, L.FLASH_CHUNKED, L.TFLITE_FLASH_CHUNKED])
)
def test_flash_logits_within_owner_bound_of_standard(case, chains, record_result, judge):
    """Flash and standard logits of the same stage differ by at most 1e-4 in PyTorch; in
    TFLite the record says whether 1e-4 held, and the legs stay within both allowances."""
    chain = chains.get(case.model)
    standard = L.STANDARD_OF[case.leg]
    runs = chain.runs(case.prompt, [case.leg, standard])
    check_flash_vs_standard(
        runs, case.leg, spread=chain.spread(case.prompt), case_id=case.case_id,
        model=case.model.name, record=record_result,
        token_text=lambda token: chain.prepared.decode([token]), judge=judge,
    )  # fmt: skip
