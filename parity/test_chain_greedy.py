"""Chain suite, greedy generation: token-id identity with the oracle, every leg.

Each leg is fed the oracle's tokens and its own greedy choice is recorded at
every step, so the first differing choice is where its own free-running text
would first differ. ``test_teacher_forced_choices_equal_free_running_generation``
checks that claim on real free-running generation. A chunked leg's greedy
tokens must also equal its one-shot leg's (chunking must not change the text).
"""

from __future__ import annotations

import pytest

from parity import legs as L
from parity.cases import leg_cases
from parity.checks import check_greedy
from parity.zoo import TINY_RANDOM


@pytest.mark.parametrize("case", leg_cases(L.ALL_LEGS + L.CHUNKED_LEGS))
def test_greedy_tokens_identical_to_oracle(case, chains, record_result, judge):
    """The leg's greedy token ids equal the oracle's at every generation step."""
    chain = chains.get(case.model)
    runs = chain.runs(case.prompt, [case.leg])
    check_greedy(
        runs, case.leg, spread=chain.spread(case.prompt), case_id=case.case_id,
        model=case.model.name, record=record_result,
        token_text=lambda token: chain.prepared.decode([token]), judge=judge,
    )  # fmt: skip


@pytest.mark.parametrize("case", leg_cases(L.CHUNKED_LEGS))
def test_greedy_tokens_after_chunked_prefill_equal_one_shot_prefill(
    case, chains, record_result, judge
):
    """After a chunked prefill the leg chooses the same greedy token ids as after one-shot
    prefill, except past a flip at an oracle near-tie (margin <= 2x the logit allowance)."""
    chain = chains.get(case.model)
    one_shot = L.base_leg(case.leg)
    runs = chain.runs(case.prompt, [case.leg, one_shot])
    check_greedy(
        runs, case.leg, spread=chain.spread(case.prompt), case_id=case.case_id,
        model=case.model.name, record=record_result, against=one_shot,
        token_text=lambda token: chain.prepared.decode([token]), judge=judge,
    )  # fmt: skip


@pytest.mark.quick
@pytest.mark.parametrize("leg", [L.HF, L.STD])
def test_teacher_forced_choices_equal_free_running_generation(leg, chains, record_result):
    """A leg generating on its own produces exactly the choices recorded under teacher forcing."""
    chain = chains.get(TINY_RANDOM)
    for prompt, ids in chain.prepared.prompt_ids.items():
        forced = chain.runs(prompt, [leg])[leg]
        free = L.run_leg(chain.factories[leg](), ids, TINY_RANDOM.max_new_tokens)
        same = sum(a == b for a, b in zip(free.chosen, forced.chosen))
        record_result(
            suite="parity",
            case_id=f"{TINY_RANDOM.name}-{leg}-{prompt}",
            model=TINY_RANDOM.name,
            legs=f"{leg}-free-vs-{leg}-forced",
            metric="identical_steps",
            value=float(same),
            tolerance=float(len(free.chosen)),
            passed=free.chosen == forced.chosen,
        )
        assert free.chosen == forced.chosen, (prompt, free.chosen, forced.chosen)
