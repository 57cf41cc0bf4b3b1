"""parity.quant_stats on hand-made distributions and runs: the KL values, the
percentile, top-1 agreement and the first greedy divergence."""

from __future__ import annotations

import math

import pytest
import torch

from parity import legs as L
from parity.quant_stats import (
    first_greedy_divergence,
    kl_divergence,
    kv_onset,
    percentile,
    quant_stats,
)


def _direct_kl(reference: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
    """KL per row written out from the definition, in float64, one row at a time."""
    values = []
    for ref_row, act_row in zip(reference.tolist(), actual.tolist()):
        ref_norm = math.log(sum(math.exp(x) for x in ref_row))
        act_norm = math.log(sum(math.exp(x) for x in act_row))
        total = 0.0
        for ref_logit, act_logit in zip(ref_row, act_row):
            log_p, log_q = ref_logit - ref_norm, act_logit - act_norm
            total += math.exp(log_p) * (log_p - log_q)
        values.append(total)
    return torch.tensor(values, dtype=torch.float64)


def test_kl_of_identical_rows_is_exactly_zero():
    """A leg that reproduces the oracle's logits has KL exactly 0 at every row."""
    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(kl_divergence(logits, logits.clone()), torch.zeros(5, dtype=torch.float64))


def test_kl_of_two_token_distributions_has_known_value():
    """KL((1/2, 1/2) || (1/4, 3/4)) = ln 2 / 2 + ln(2/3) / 2 nats, from logits of any offset."""
    reference = torch.tensor([[math.log(0.5), math.log(0.5)]], dtype=torch.float64) + 3.0
    actual = torch.tensor([[math.log(0.25), math.log(0.75)]], dtype=torch.float64) - 7.0
    expected = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    assert float(kl_divergence(reference, actual)[0]) == pytest.approx(expected, rel=1e-14)


def test_kl_matches_direct_float64_computation_on_random_logits():
    """Per-row KL equals the definition evaluated term by term, including fp32 input."""
    generator = torch.Generator().manual_seed(1)
    reference = 4 * torch.randn(6, 40, generator=generator, dtype=torch.float64)
    actual = (reference + 0.3 * torch.randn(6, 40, generator=generator, dtype=torch.float64)).to(
        torch.float32
    )
    expected = _direct_kl(reference, actual.to(torch.float64))
    torch.testing.assert_close(kl_divergence(reference, actual), expected, rtol=1e-12, atol=1e-15)
    assert bool((expected > 0).all())


def test_kl_is_inf_where_the_leg_gives_zero_probability_to_a_possible_token():
    """Q(v) = 0 where P(v) > 0 makes KL infinite; P(v) = 0 contributes nothing."""
    reference = torch.tensor([[0.0, 0.0, -math.inf]], dtype=torch.float64)
    assert math.isinf(float(kl_divergence(reference, torch.tensor([[0.0, -math.inf, 0.0]]))[0]))
    assert float(kl_divergence(reference, torch.tensor([[0.0, 0.0, -math.inf]]))[0]) == 0.0


def test_kl_rejects_rows_that_do_not_line_up():
    """Different shapes name both."""
    with pytest.raises(ValueError, match=r"reference_logits \(2, 3\) and actual_logits \(2, 4\)"):
        kl_divergence(torch.zeros(2, 3), torch.zeros(2, 4))


def test_percentile_interpolates_between_order_statistics():
    """The 0.99 quantile of 0..100 is 99; of (0, 1) it is 0.99; NaN propagates."""
    assert percentile(torch.arange(101.0), 0.99) == pytest.approx(99.0)
    assert percentile(torch.tensor([1.0, 0.0]), 0.99) == pytest.approx(0.99)
    assert math.isnan(percentile(torch.tensor([0.0, math.nan]), 0.99))
    with pytest.raises(ValueError, match=r"fraction \(1.5\) must be within \[0, 1\]"):
        percentile(torch.zeros(3), 1.5)


def _run(prefill: list[list[float]], steps: list[list[float]], fed=()) -> L.LegRun:
    """A LegRun with the given prefill rows and decode-step rows (chosen = their argmax)."""
    prefill_logits = torch.tensor(prefill, dtype=torch.float64)
    step_logits = torch.cat([prefill_logits[-1:], torch.tensor(steps, dtype=torch.float64)])
    return L.LegRun(
        leg="x", prompt_ids=list(range(len(prefill))),
        chosen=[int(row.argmax()) for row in step_logits], fed=list(fed),
        prefill_logits=prefill_logits, step_logits=step_logits, kv=None, hidden=None,
    )  # fmt: skip


def test_stats_pool_prefill_and_decode_rows_of_every_prompt():
    """Two prompts, 3 + 2 rows: KL and top-1 agreement over all five, divergence per prompt."""
    oracle_a = _run([[1.0, 0.0], [0.0, 2.0]], [[3.0, 0.0]])  # chosen: 1, 0
    leg_a = _run([[1.0, 0.0], [0.0, 2.0]], [[0.0, 3.0]])  # step 1 flips
    oracle_b = _run([[0.0, 1.0]], [[1.0, 0.0]])
    leg_b = _run([[0.0, 1.0]], [[1.0, 0.0]])  # identical
    stats = quant_stats({"a": leg_a, "b": leg_b}, {"a": oracle_a, "b": oracle_b})
    flipped = float(kl_divergence(torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]]))[0])
    assert stats.rows == 5
    assert stats.mean_kl == pytest.approx(flipped / 5, rel=1e-14)
    assert stats.max_kl == pytest.approx(flipped, rel=1e-14)
    assert stats.top1_agreement == pytest.approx(4 / 5)
    assert dict(stats.first_divergence) == {"a": 1, "b": None}
    assert stats.divergence_text() == "a step 1/2, b never/2"


def test_first_greedy_divergence_is_the_first_differing_step():
    """Step 0 comes from prefill; None when every step agrees."""
    oracle = _run([[0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]])
    assert first_greedy_divergence(oracle, oracle) is None
    assert first_greedy_divergence(_run([[1.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]]), oracle) == 0
    assert first_greedy_divergence(_run([[0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]), oracle) == 2


def test_stats_reject_a_prompt_without_oracle_run():
    """The missing prompt is named."""
    run = _run([[0.0, 1.0]], [])
    with pytest.raises(ValueError, match=r"prompts \['b'\] have no oracle run"):
        quant_stats({"a": run, "b": run}, {"a": run})


def test_kv_onset_names_the_first_layer_over_and_its_positions():
    """Layer 0 within, layer 1 over at position 2 only: named; no row over: said so."""
    expected = _run([[0.0, 1.0]] * 3, [])
    expected.kv = torch.zeros(3, 2, 3, 1, 2, dtype=torch.float64)  # (L, 2, T, G, H)
    actual = _run([[0.0, 1.0]] * 3, [])
    actual.kv = expected.kv.clone()
    actual.kv[0, 0, 1, 0, 0] = 0.5e-3  # within the allowance
    actual.kv[1, 1, 2, 0, 1] = 0.05
    actual.kv[2, 0, 0, 0, 0] = 0.2  # later layers are not searched
    allowance = torch.full((3, 2, 3), 1e-3, dtype=torch.float64)
    assert kv_onset(actual, expected, allowance) == (
        "KV cache after prefill: layers 0..0 within the allowance, layer 1 over it at"
        " positions [2] (greatest difference 0.05)"
    )
    assert kv_onset(expected, expected, allowance) == (
        "KV cache after prefill: every layer within the allowance"
    )
