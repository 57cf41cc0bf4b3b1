"""The float64 oracle implements the contract (checked against torch's own float64 SDPA)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from parity.oracle import ALL_MASKED, UNDETERMINED, VISIBLE, hull_bounds, reference_attention
from property_tests.strategies import AttentionCase, make_inputs

CASES = [
    AttentionCase(batch=2, seq_q=5, seq_kv=9, num_heads=6, num_kv_heads=2, head_dim=16),
    AttentionCase(seq_q=4, seq_kv=7, offset=2, num_heads=4, num_kv_heads=1, mask="pad-left"),
    AttentionCase(seq_q=3, seq_kv=8, num_heads=4, num_kv_heads=4, mask="random", mask_shape="bnts"),
    AttentionCase(seq_q=6, seq_kv=6, num_heads=2, num_kv_heads=1, alibi=True, scale=0.3),
    # Gemma 3's sliding window: -inf above the diagonal, -1e9 below a window that wraps in the block.
    AttentionCase(
        seq_q=7,
        seq_kv=12,
        offset=3,
        num_heads=2,
        num_kv_heads=1,
        mask="gemma3-window",
        window=3,
        fill="-1e9",
    ),
]


def _torch_sdpa64(inputs: dict) -> torch.Tensor:
    """torch's math SDPA in float64 with litert's rules (repeat_interleave GQA, alibi * scale)."""
    q, k, v = (inputs[name].to(torch.float64).transpose(1, 2) for name in ("q", "k", "v"))
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scale = inputs["scale"] or 1 / math.sqrt(inputs["head_size"])
    mask = inputs["mask"]
    mask = None if mask is None else mask.to(torch.float64)
    if inputs["alibi_bias"] is not None:
        alibi = inputs["alibi_bias"].to(torch.float64) * scale
        mask = alibi if mask is None else mask + alibi
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=mask is None, scale=scale
    )
    return out.transpose(1, 2)  # (B, T, N, H)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.case_id)
def test_oracle_matches_torch_float64_sdpa(case):
    """On visible rows the oracle equals torch's float64 SDPA to 1e-12 (float64 rounding)."""
    inputs = make_inputs(case)
    oracle = reference_attention(**inputs)
    visible = (oracle.row_state == VISIBLE).unsqueeze(-1)
    expected = _torch_sdpa64(inputs)
    difference = torch.where(visible, (oracle.output - expected).abs(), 0.0)
    assert float(difference.max()) < 1e-12  # float64: u = 1.1e-16, sums of < 20 terms of size < 10


def test_oracle_applies_softcap_before_the_mask():
    """softcap * tanh(s / softcap) is taken before the mask is added, as litert-torch does."""
    case = AttentionCase(seq_q=3, seq_kv=5, offset=2, mask="causal", softcap=2.0, logits="peaky")
    inputs = make_inputs(case)
    q, k, v = (inputs[name].to(torch.float64)[0, :, 0] for name in ("q", "k", "v"))
    scores = 2.0 * torch.tanh(q @ k.T / math.sqrt(case.head_dim) / 2.0)
    weights = torch.softmax(scores + inputs["mask"][0, 0].to(torch.float64), dim=-1)
    expected = weights @ v
    assert torch.allclose(reference_attention(**inputs).output[0, :, 0], expected, atol=1e-13)


def test_oracle_mask_none_is_top_left_causal_and_alibi_without_mask_is_not():
    """mask=None: row i sees keys <= i; mask=None with alibi: every key is visible."""
    case = AttentionCase(seq_q=2, seq_kv=4)
    inputs = make_inputs(case)
    first_row = reference_attention(**inputs).output[0, 0, 0]
    assert torch.equal(first_row, inputs["v"][0, 0, 0].to(torch.float64))  # only key 0
    # q = 0 makes every score 0: a row that sees all keys averages them.
    with_alibi = dict(inputs, q=torch.zeros_like(inputs["q"]), alibi_bias=torch.zeros(1, 1, 1, 4))
    first_row = reference_attention(**with_alibi).output[0, 0, 0]
    assert torch.allclose(first_row, inputs["v"][0, :, 0].to(torch.float64).mean(0), atol=1e-15)


def test_oracle_row_rules_for_fully_masked_rows():
    """All -inf: ALL_MASKED and 0. All finite large negatives: UNDETERMINED and NaN."""
    inputs = make_inputs(AttentionCase(seq_q=3, seq_kv=4))
    mask = torch.zeros(3, 4)
    mask[0] = -math.inf  # every key -inf
    mask[1] = -1e9  # every key finitely masked: fp32 absorbs the scores
    mask[2, 1:] = -1e9  # one visible key
    oracle = reference_attention(**dict(inputs, mask=mask))
    assert oracle.row_state[0, :, 0].tolist() == [ALL_MASKED, UNDETERMINED, VISIBLE]
    assert torch.equal(oracle.output[0, 0], torch.zeros_like(oracle.output[0, 0]))
    assert torch.isnan(oracle.output[0, 1]).all()
    assert torch.equal(oracle.output[0, 2, 0], inputs["v"][0, 0, 0].to(torch.float64))
    low, high = hull_bounds(inputs["v"], oracle.hull_keys)
    assert torch.equal(low[0, 2], high[0, 2])  # one key: the hull is a point
    assert bool((low[0, 1] <= high[0, 1]).all()) and bool(torch.isinf(low[0, 0]).all())


def test_rounding_scale_of_a_single_key_is_the_output_rounding_only():
    """One key: no logit term (any logit error cancels), 2 |o| for the sum and the division."""
    oracle = reference_attention(**make_inputs(AttentionCase(seq_kv=1, logits="large")))
    # rtol 1e-6: the logit term is a square root of a float64 cancellation
    # (sum of three matmuls), so its exact 0 comes out near sqrt(1e-16) x size.
    assert torch.allclose(oracle.rounding_scale, 2 * oracle.output.abs(), rtol=1e-6, atol=0)


def test_rounding_scale_grows_with_a_large_constant_bias():
    """A bias of -50 on every key leaves the output but adds fp32 rounding (|bias| u per logit)."""
    inputs = make_inputs(AttentionCase(seq_kv=16, mask="bidirectional"))
    base = reference_attention(**dict(inputs, mask=torch.zeros(1, 16)))
    shifted = reference_attention(**dict(inputs, mask=torch.full((1, 16), -50.0)))
    assert torch.allclose(base.output, shifted.output, atol=1e-12)
    assert float(shifted.rounding_scale.mean()) > 2 * float(base.rounding_scale.mean())
