"""Metamorphic properties: the candidate against itself on transformed inputs.

Each property holds exactly in real arithmetic; in fp32 two correct results
differ by rounding only, judged by the "fp32-self" error model with the
oracle's rounding scale (parity/tolerances.py).
"""

from __future__ import annotations

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from parity.oracle import VISIBLE, reference_attention
from property_tests.settings import GATE_SETTINGS
from property_tests.strategies import (
    MAX_BLOCKS_PER_AXIS,
    attention_cases,
    explicit_mask,
    make_inputs,
    query_positions,
)

# Masks under which query row i sees only keys up to its cache position.
CAUSAL_MASKS = (
    "none",
    "causal",
    "pad-left",
    "pad-right",
    "gemma2-window",
    "gemma3-window",
    "full-rows",
)


@GATE_SETTINGS
@given(case=attention_cases(), other_q=st.integers(1, 300), other_kv=st.integers(1, 300))
def test_output_does_not_depend_on_block_sizes(gate, case, other_q, other_kv):
    """Other q / kv block sizes (dividing T and S or not) give the same output."""
    other = case.replace(
        q_block_size=max(other_q, math.ceil(case.seq_q / MAX_BLOCKS_PER_AXIS)),
        kv_block_size=max(other_kv, math.ceil(case.seq_kv / MAX_BLOCKS_PER_AXIS)),
    )
    inputs = make_inputs(case)
    names = (f"qb{other.q_block_size}-kb{other.kv_block_size}", "case-blocks")
    oracle = reference_attention(**inputs)
    gate.check_same(
        case, gate.candidate(other, inputs), gate.candidate(case, inputs), oracle, names
    )


@GATE_SETTINGS
@given(case=attention_cases(min_batch=2))
def test_batch_rows_are_independent(gate, case):
    """Each batch row computed alone equals the same row computed in the batch."""
    inputs = make_inputs(case)
    oracle = reference_attention(**inputs)
    batched = gate.candidate(case, inputs)
    worst = 0.0
    for row in range(case.batch):
        alone = gate.candidate(case.replace(batch=1), _batch_row(inputs, row))
        names = (f"row{row}-alone", f"row{row}-in-batch")
        piece = oracle.select(batch=slice(row, row + 1))
        comparison = gate.check_same(case, alone, batched[row : row + 1], piece, names, steer=False)
        worst = max(worst, comparison.worst_ratio)
    gate.steer(worst, "batch-rows")


def _batch_row(inputs: dict, row: int) -> dict:
    """The inputs of one batch row; masks without a batch dimension are shared."""
    one = slice(row, row + 1)
    mask = inputs["mask"]
    if mask is not None and mask.dim() == 4 and mask.shape[0] > 1:
        mask = mask[one]
    return dict(inputs, q=inputs["q"][one], k=inputs["k"][one], v=inputs["v"][one], mask=mask)


@GATE_SETTINGS
@given(case=attention_cases(masks=CAUSAL_MASKS, min_extra_kv=1))
def test_keys_and_values_at_masked_positions_have_no_influence(gate, case):
    """Junk keys and values (x1e3, x1e4) where every row of a KV head is masked change nothing."""
    if case.mask == "none":
        case = case.replace(alibi=False)  # alibi with mask=None is not causal: nothing masked
    inputs = make_inputs(case)
    oracle = reference_attention(**inputs)
    group = case.num_heads // case.num_kv_heads
    # A KV position is junk for (b, g) when no visible query row of any head of group g
    # may use it. Undetermined rows (all keys finitely masked) average every finite key,
    # junk included, so they are left out of the comparison (check_same skips them).
    visible_rows = (oracle.row_state == VISIBLE).transpose(1, 2).unsqueeze(-1)  # (B, N, T, 1)
    used = (oracle.hull_keys & visible_rows).any(dim=2)  # (B, N, S)
    used = used.reshape(case.batch, case.num_kv_heads, group, case.seq_kv).any(dim=2)
    junk = ~used.transpose(1, 2).unsqueeze(-1)  # (B, S, G, 1)
    assert junk.any(), f"case {case.case_id} has no masked position (strategy bug)"
    generator = torch.Generator().manual_seed(case.seed + 1)
    noise_k = 1e3 * torch.randn(inputs["k"].shape, generator=generator).to(inputs["k"].dtype)
    noise_v = 1e4 * torch.randn(inputs["v"].shape, generator=generator).to(inputs["v"].dtype)
    junked = dict(
        inputs,
        k=torch.where(junk, noise_k, inputs["k"]),
        v=torch.where(junk, noise_v, inputs["v"]),
    )
    names = ("junk-at-masked", "clean")
    gate.check_same(case, gate.candidate(case, junked), gate.candidate(case, inputs), oracle, names)


@GATE_SETTINGS
@given(case=attention_cases())
def test_output_lies_in_convex_hull_of_visible_values(gate, case):
    """Every output coordinate lies between the min and max of the visible values."""
    inputs = make_inputs(case)
    oracle = reference_attention(**inputs)
    visible = (oracle.row_state == VISIBLE).unsqueeze(-1)
    gate.check_hull(case, gate.candidate(case, inputs), inputs["v"], oracle, visible, "visible")


@GATE_SETTINGS
@given(case=attention_cases(ratios=(2, 3, 4, 5, 6, 7, 8)))
def test_gqa_equals_mha_on_repeated_kv_heads(gate, case):
    """GQA / MQA equals MHA on KV heads repeated as litert-torch does (head n reads n // R)."""
    inputs = make_inputs(case)
    oracle = reference_attention(**inputs)
    group = case.num_heads // case.num_kv_heads
    repeated = dict(
        inputs,
        k=inputs["k"].repeat_interleave(group, dim=2),
        v=inputs["v"].repeat_interleave(group, dim=2),
    )
    names = ("gqa", "mha-repeated-kv")
    gate.check_same(
        case, gate.candidate(case, inputs), gate.candidate(case, repeated), oracle, names
    )


# One candidate call per query row: 48 rows bound the calls per example, for
# short cases and for long ones (S past 512 at any offset, so a decode step at
# position < 512 meets a prefill over more than 512 keys).
DECODE_MAX_ROWS = 48


@GATE_SETTINGS
@given(
    case=attention_cases(
        masks=CAUSAL_MASKS, max_len=DECODE_MAX_ROWS, long_max_seq_q=DECODE_MAX_ROWS
    )
)
def test_decoding_one_token_at_a_time_equals_one_prefill(gate, case):
    """Query row i decoded alone, with the cache filled up to its position, equals prefill row i."""
    if case.mask == "none":
        case = case.replace(alibi=False)  # alibi with mask=None is not causal: no decode order
    inputs = make_inputs(case)
    oracle = reference_attention(**inputs)
    prefill = gate.candidate(case, inputs)
    mask = explicit_mask(case, inputs)
    worst = 0.0
    for row, position in enumerate(query_positions(case)):
        length = position + 1  # the cache holds keys 0..position
        alibi = inputs["alibi_bias"]
        step = dict(
            inputs,
            q=inputs["q"][:, row : row + 1],
            k=inputs["k"][:, :length],
            v=inputs["v"][:, :length],
            mask=mask[:, :, row : row + 1, :length],
            alibi_bias=None if alibi is None else alibi[..., :length],
        )
        decoded = gate.candidate(case.replace(seq_q=1, seq_kv=length), step)
        names = (f"decode-row{row}-at-{position}", f"prefill-row{row}")
        piece = oracle.select(rows=slice(row, row + 1))
        comparison = gate.check_same(
            case, decoded, prefill[:, row : row + 1], piece, names, steer=False
        )
        worst = max(worst, comparison.worst_ratio)
    gate.steer(worst, "decode-vs-prefill")


@GATE_SETTINGS
@given(case=attention_cases(), permutation_seed=st.integers(0, 2**16))
def test_permuting_keys_with_their_mask_changes_nothing(gate, case, permutation_seed):
    """Permuting key positions (keys, values, mask and alibi columns together) changes nothing."""
    inputs = make_inputs(case)
    oracle = reference_attention(**inputs)
    order = torch.randperm(case.seq_kv, generator=torch.Generator().manual_seed(permutation_seed))
    alibi = inputs["alibi_bias"]
    permuted = dict(
        inputs,
        k=inputs["k"][:, order],
        v=inputs["v"][:, order],
        mask=explicit_mask(case, inputs)[..., order],
        alibi_bias=None if alibi is None else alibi[..., order],
    )
    names = (f"keys-permuted-seed{permutation_seed}", "original")
    gate.check_same(
        case, gate.candidate(case, permuted), gate.candidate(case, inputs), oracle, names
    )
