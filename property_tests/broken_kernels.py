"""Deliberately broken blockwise attention kernels: the gate must fail every one.

Each public function has the full contract of ``edge_flash.flash_attention``
(run it with ``--attention-impl=property_tests.broken_kernels:<name>``) and is
one blockwise kernel with exactly one realistic bug. They share one copy of the
algorithm, ``_blockwise``, written like edge_flash's kernel; ``bug=None`` gives
the correct kernel (property_tests/test_gate_has_teeth.py checks that it is).

The bugs cover the classes blockwise kernels really get wrong: online-softmax
bookkeeping (blocks), NaN from -inf arithmetic, causal positions, GQA heads,
partial blocks, mask slicing, block skipping that only causal masks justify,
scale, softcap order, precision (fp32 and half), small systematic drift, drift
that appears only on long sequences, fully masked rows, and overflow.
property_tests/test_gate_has_teeth.py lists, for every bug, the properties
that must catch it.
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional

import torch

from edge_flash.validation import check_attention_inputs, check_block_size

# long_sequence_drift: the project recommends flash for S > 512, so a bug in a
# path taken only there (a different block schedule, a long-context
# normalisation) is exactly what a gate drawing S <= 160 never sees. 3e-4
# relative is 3x the owner's 1e-4 on an output of size 1, and ~5000 u of fp32,
# far above the gate's floor of 8 u times the rounding scale (measured: the
# first long case the ci search drew failed the fp32 test with an error 52x
# its allowance), so any gate that draws S > 512 fails it.
LONG_PATH_MIN_KV = 512
LONG_PATH_DRIFT = 3e-4
# skips_blocks_by_edge_rows: a mask entry at or below this counts as masked in
# its skip test (-inf and the finite large negatives models use; the random
# masks' additive values stay above -4).
SKIP_TEST_MASKED = -1e4

BUGS = {
    "missing_acc_rescale": "acc is not multiplied by exp(m_old - m_new) when the running max grows",
    "neg_inf_running_max": "running max starts at -inf, unclamped: a fully masked block gives NaN",
    "causal_diagonal_off_by_one": "mask=None: each query row also sees the next key",
    "bottom_right_causal": "mask=None with S > T: causal aligned bottom-right, not top-left",
    "gqa_head_modulo": "query head n reads KV head n % G instead of n // (N // G)",
    "drops_partial_kv_block": "KV loop runs S // kv_block_size blocks: the partial last block is lost",
    "mask_rows_not_offset": "the mask's rows are sliced [0, rows) for every query block, not [t0, t1)",
    "scale_missing_sqrt": "default scale 1 / head_size instead of 1 / sqrt(head_size)",
    "truncated_scale_constant": "default scale hard-coded to 5 significant digits (up to 5e-5 relative)",
    "softcap_after_mask": "softcap applied after the mask: -inf becomes -softcap, masked keys leak",
    "half_precision_probs": "exp(scores - max) rounded to fp16 before the sums (low-precision exp)",
    "approximate_reciprocal": "final 1 / l from an approximation biased by +3e-6 (drift < 1e-4)",
    "fully_masked_rows_mean": "masks clamped at finfo.min to dodge NaN: fully masked rows give mean(v)",
    "no_max_subtraction": "exp(scores) without subtracting the running max: overflows at large logits",
    "long_sequence_drift": (
        f"a long-sequence path (S > {LONG_PATH_MIN_KV}) whose output is biased by"
        f" 1 + {LONG_PATH_DRIFT:g}"
    ),
    "fp16_computed_in_bf16": "fp16 inputs are computed in bf16 (8 significand bits, not fp32's 24)",
    "skips_blocks_by_edge_rows": (
        "a KV block is skipped when the mask hides it from the query block's first and last rows"
        " (right for causal and padding masks; a sliding window narrower than the block lies"
        " between them)"
    ),
}


def _broken(bug: str) -> Callable:
    """A kernel with the full contract and the one bug ``bug``."""

    def kernel(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        head_size: int,
        mask: Optional[torch.Tensor] = None,
        scale: Optional[float] = None,
        softcap: Optional[float] = None,
        alibi_bias: Optional[torch.Tensor] = None,
        *,
        q_block_size: int = 256,
        kv_block_size: int = 128,
    ) -> torch.Tensor:
        return _blockwise(
            q, k, v, head_size, mask, scale, softcap, alibi_bias, q_block_size, kv_block_size, bug
        )

    kernel.__name__ = kernel.__qualname__ = bug or "correct_copy"
    kernel.__doc__ = f"Blockwise attention with one bug: {BUGS[bug]}." if bug else "No bug."
    return kernel


def _blockwise(q, k, v, head_size, mask, scale, softcap, alibi_bias, q_block, kv_block, bug):
    """edge_flash's algorithm (grouped heads, online softmax), with ``bug`` switched in."""
    check_attention_inputs(q, k, v, head_size, mask, alibi_bias)
    check_block_size("q_block_size", q_block)
    check_block_size("kv_block_size", kv_block)
    if scale is None:
        scale = 1.0 / (head_size if bug == "scale_missing_sqrt" else math.sqrt(head_size))
        if bug == "truncated_scale_constant":
            scale = float(f"{scale:.5g}")
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    if bug == "fp16_computed_in_bf16" and q.dtype == torch.float16:
        dtype = torch.bfloat16  # a "half is half" shortcut: 8 significand bits everywhere
    batch, seq_q, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[2]
    if bug == "gqa_head_modulo":
        index = torch.arange(num_heads) % num_kv_heads
        k, v, num_kv_heads = k[:, :, index], v[:, :, index], num_heads  # head n reads n % G
    group = num_heads // num_kv_heads
    q_grouped = (q.to(dtype) * scale).transpose(1, 2)  # (B, N, T, H)
    q_grouped = q_grouped.reshape(batch, num_kv_heads, group, seq_q, head_dim)  # (B, G, R, T, H)
    k_t = k.to(dtype).permute(0, 2, 3, 1)  # (B, G, H, S)
    v_g = v.to(dtype).transpose(1, 2)  # (B, G, S, H)
    biases = _grouped_biases(mask, alibi_bias, scale, num_kv_heads, group, dtype, bug)
    causal = mask is None and alibi_bias is None
    blocks = []
    for t0 in range(0, seq_q, q_block):
        q_part = q_grouped[:, :, :, t0 : t0 + q_block]
        blocks.append(
            _query_block(q_part, k_t, v_g, biases, causal, t0, seq_q, kv_block, softcap, bug)
        )
    out = torch.cat(blocks, dim=3).reshape(batch, num_heads, seq_q, head_dim)  # (B, N, T, H)
    if bug == "long_sequence_drift" and k.shape[1] > LONG_PATH_MIN_KV:
        out = out * (1 + LONG_PATH_DRIFT)
    return out.transpose(1, 2).to(q.dtype)  # (B, T, N, H)


def _grouped_biases(mask, alibi_bias, scale, num_kv_heads, group, dtype, bug) -> List[torch.Tensor]:
    """mask and alibi * scale as (Bm, Gm, Rm, Tm, Sm) views, as edge_flash builds them."""
    biases = [
        b for b in (mask, None if alibi_bias is None else alibi_bias * scale) if b is not None
    ]
    grouped = []
    for bias in biases:
        bias = bias.to(dtype)
        if bug == "fully_masked_rows_mean":
            bias = bias.clamp(min=torch.finfo(dtype).min)
        bias = bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))  # (Bm, Nm, Tm, Sm)
        b, n, t, s = bias.shape
        heads = (1, 1) if n == 1 else (num_kv_heads, group)
        grouped.append(bias.reshape(b, *heads, t, s))
    return grouped


def _query_block(q_block, k_t, v_g, biases, causal, t0, seq_q, kv_block, softcap, bug):
    """Online softmax of one query block (B, G, R, T', H) over the KV blocks."""
    batch, num_kv_heads, group, rows, head_dim = q_block.shape
    seq_kv, dtype = k_t.shape[-1], q_block.dtype
    lowest = torch.finfo(dtype).min
    q_flat = q_block.reshape(batch, num_kv_heads, group * rows, head_dim)  # (B, G, R*T', H)
    state_shape = (batch, num_kv_heads, group, rows, 1)
    start = (
        -math.inf
        if bug == "neg_inf_running_max"
        else (0.0 if bug == "no_max_subtraction" else lowest)
    )
    running_max = torch.full(state_shape, start, dtype=dtype)
    running_sum = torch.zeros(state_shape, dtype=dtype)
    acc = torch.zeros((*state_shape[:-1], head_dim), dtype=dtype)
    # Causal diagonal: row t sees keys <= t + shift.
    shift = {"causal_diagonal_off_by_one": 1, "bottom_right_causal": seq_kv - seq_q}.get(bug, 0)
    stop = seq_kv - seq_kv % kv_block if bug == "drops_partial_kv_block" else seq_kv
    for s0 in range(0, stop, kv_block):
        s1 = min(s0 + kv_block, seq_kv)
        if causal and s0 > t0 + rows - 1 + shift:
            break
        if bug == "skips_blocks_by_edge_rows" and _hidden_from_edge_rows(biases, t0, rows, s0, s1):
            continue
        scores = q_flat @ k_t[:, :, :, s0:s1]  # (B, G, R*T', S')
        if softcap is not None and bug != "softcap_after_mask":
            scores = torch.tanh(scores / softcap) * softcap
        scores = scores.reshape(batch, num_kv_heads, group, rows, s1 - s0)  # (B, G, R, T', S')
        for bias in biases:
            scores = scores + _slice_bias(bias, t0, rows, s0, s1, bug)
        if causal and s1 - 1 > t0 + shift:
            diagonal = t0 - s0 + 1 + shift
            scores = scores + torch.full((rows, s1 - s0), -math.inf, dtype=dtype).triu(diagonal)
        if softcap is not None and bug == "softcap_after_mask":
            scores = torch.tanh(scores / softcap) * softcap
        block_max = scores.amax(dim=-1, keepdim=True)
        if bug != "neg_inf_running_max":
            block_max = block_max.clamp(min=lowest)
        new_max = (
            running_max if bug == "no_max_subtraction" else torch.maximum(running_max, block_max)
        )
        correction = torch.exp(running_max - new_max)
        probs = torch.exp(scores - new_max)  # (B, G, R, T', S')
        if bug == "half_precision_probs":
            probs = probs.to(torch.float16).to(dtype)
        running_sum = running_sum * correction + probs.sum(dim=-1, keepdim=True)
        probs_flat = probs.reshape(batch, num_kv_heads, group * rows, s1 - s0)
        weighted = (probs_flat @ v_g[:, :, s0:s1]).reshape(acc.shape)  # (B, G, R, T', H)
        acc = acc + weighted if bug == "missing_acc_rescale" else acc * correction + weighted
        running_max = new_max
    inverse = 1.0 / torch.clamp(running_sum, min=torch.finfo(dtype).tiny)
    if bug == "approximate_reciprocal":
        inverse = inverse * (1 + 3e-6)
    return acc * inverse


def _hidden_from_edge_rows(biases, t0, rows, s0, s1) -> bool:
    """Whether a bias masks keys [s0, s1) for rows t0 and t0 + rows - 1 (everywhere in B and N).

    The bug's block-skip test. Under a causal or padding mask a later row
    sees every key an earlier row sees, so the last row alone would decide
    it; under a sliding window narrower than the block, middle rows see keys
    that both edge rows have lost.
    """
    for bias in biases:
        if bias.shape[3] != 1:
            bias = bias[:, :, :, [t0, t0 + rows - 1]]
        if bias.shape[4] != 1:
            bias = bias[:, :, :, :, s0:s1]
        if bool((bias <= SKIP_TEST_MASKED).all()):
            return True
    return False


def _slice_bias(bias, t0, rows, s0, s1, bug) -> torch.Tensor:
    """Rows [t0, t0 + rows) and columns [s0, s1) of a (Bm, Gm, Rm, Tm, Sm) bias."""
    if bias.shape[3] != 1:
        start = 0 if bug == "mask_rows_not_offset" else t0
        bias = bias[:, :, :, start : start + rows]
    if bias.shape[4] != 1:
        bias = bias[:, :, :, :, s0:s1]
    return bias


correct_copy = _broken(None)  # not broken: checks that _blockwise itself is right
missing_acc_rescale = _broken("missing_acc_rescale")
neg_inf_running_max = _broken("neg_inf_running_max")
causal_diagonal_off_by_one = _broken("causal_diagonal_off_by_one")
bottom_right_causal = _broken("bottom_right_causal")
gqa_head_modulo = _broken("gqa_head_modulo")
drops_partial_kv_block = _broken("drops_partial_kv_block")
mask_rows_not_offset = _broken("mask_rows_not_offset")
scale_missing_sqrt = _broken("scale_missing_sqrt")
truncated_scale_constant = _broken("truncated_scale_constant")
softcap_after_mask = _broken("softcap_after_mask")
half_precision_probs = _broken("half_precision_probs")
approximate_reciprocal = _broken("approximate_reciprocal")
fully_masked_rows_mean = _broken("fully_masked_rows_mean")
no_max_subtraction = _broken("no_max_subtraction")
long_sequence_drift = _broken("long_sequence_drift")
fp16_computed_in_bf16 = _broken("fp16_computed_in_bf16")
skips_blocks_by_edge_rows = _broken("skips_blocks_by_edge_rows")

__all__ = ["BUGS", "correct_copy", *BUGS]
