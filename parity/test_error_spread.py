"""parity.error_spread: the spread of the noisy oracle runs and its self-check."""

from __future__ import annotations

import pytest
import torch

from parity.error_spread import SAMPLES, _finished, _joined, _row_stats, measure_spread, spread_of
from parity.exact_random import exact_generator, normal
from parity.tolerances import MODEL_FP32, SPREAD_Z
from parity.zoo import TINY_RANDOM

pytestmark = pytest.mark.quick


def test_spread_of_keeps_the_rms_row_max_and_the_noisiest_element():
    """Hand-made deviations: the two numbers per row are what the docstring says."""
    deviations = torch.tensor(
        [[[1.0, -2.0]], [[3.0, 0.0]], [[-1.0, 2.0]]], dtype=torch.float64
    )  # (N=3, rows=1, E=2)
    spread = spread_of(deviations, SPREAD_Z)
    assert float(spread.row_max_rms[0]) == pytest.approx(((4 + 9 + 4) / 3) ** 0.5)
    assert float(spread.element_rms_max[0]) == pytest.approx(((1 + 9 + 1) / 3) ** 0.5)


def test_gaussian_rows_never_fail_their_own_leave_one_out_allowance():
    """400 rows of 500 correlated Gaussian errors, 8 samples: every sample within the others'."""
    base = normal((SAMPLES, 400, 50), exact_generator(1)).to(torch.float64)
    mixing = normal((50, 500), exact_generator(2)).to(torch.float64)
    spread = spread_of(base @ mixing, SPREAD_Z)  # each row a correlated Gaussian vector
    assert 0 < spread.null_ratio < 1


def test_a_spread_measured_a_block_of_rows_at_a_time_equals_the_whole():
    """Every statistic is per row: blocks of rows, joined, give the whole spread exactly."""
    deviations = normal((SAMPLES, 3, 10, 7), exact_generator(3)).to(torch.float64)  # rows (3, 10)
    whole = spread_of(deviations, SPREAD_Z)
    blocks = [_row_stats(deviations[:, :, a:b]) for a, b in ((0, 4), (4, 5), (5, 10))]
    joined = _finished(_joined(blocks, row_dim=1), SPREAD_Z)
    assert torch.equal(joined.row_max_rms, whole.row_max_rms)
    assert torch.equal(joined.element_rms_max, whole.element_rms_max)
    assert joined.null_ratio == whole.null_ratio


def test_fewer_than_three_samples_are_refused():
    with pytest.raises(ValueError, match="need at least 3"):
        spread_of(torch.zeros(2, 4, 5), SPREAD_Z)


def test_the_tiny_models_spreads_pass_their_own_check_and_allow_something(chains):
    """Every prompt of the tiny model: null ratio below 1, every row's allowance positive."""
    chain = chains.get(TINY_RANDOM)
    for prompt in chain.prepared.prompt_ids:
        spread = chain.spread(prompt)
        assert spread.samples == SAMPLES
        assert spread.null_ratio() < 1, (prompt, spread.null_ratio())
        for part in (spread.prefill_logits, spread.step_logits, spread.kv, spread.hidden):
            assert bool((MODEL_FP32.allowance(part) > 0).all()), prompt


def test_noisy_samples_that_prefill_in_chunks_still_pass_their_own_check(chains):
    """The long-context spread's way (prefill_chunk): the tiny model's longest prompt in
    chunks of 7 rows. Each chunked sample is a correct fp32 implementation, so the
    spread passes its leave-one-out check and allows something on every row."""
    from parity import legs as L

    chain = chains.get(TINY_RANDOM)
    prompt = max(chain.prepared.prompt_ids, key=lambda name: len(chain.prepared.prompt_ids[name]))
    oracle_run = chain.runs(prompt, [])[L.ORACLE]
    spread = measure_spread(
        chain._oracle_model(), oracle_run, TINY_RANDOM.kv_cache_max_len, MODEL_FP32.z,
        prefill_chunk=7,
    )  # fmt: skip
    assert spread.prefill_logits.row_max_rms.shape == (len(oracle_run.prompt_ids),)
    assert spread.null_ratio() < 1, spread.null_ratio()
    for part in (spread.prefill_logits, spread.step_logits, spread.kv, spread.hidden):
        assert bool((MODEL_FP32.allowance(part) > 0).all())
