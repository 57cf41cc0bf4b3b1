"""Blockwise ("flash") attention with litert-torch's SDPA contract.

``flash_attention`` is a drop-in replacement for
``litert_torch.generative.layers.scaled_dot_product_attention.scaled_dot_product_attention``:
same arguments, same shapes, same masking rules. It never materialises a
``T x S`` score tensor per head: queries are cut into blocks of
``q_block_size`` rows and keys into blocks of ``kv_block_size`` columns, and the
softmax is accumulated online (running max ``m``, running sum ``l``, running
weighted values ``acc``), as in FlashAttention.

Design choices that matter on device (see ../shared/FACTS.md):
- Control flow is static Python over static shapes, so ``torch.export`` and
  litert-torch conversion unroll it; block sizes trade graph size for memory.
- No ``torch.where``: it lowers to SELECT ops XNNPACK does not delegate. Guards
  use ``clamp`` / ``maximum`` instead.
- GQA is computed on grouped heads ([B, G, R*T, H] against [B, G, S, H]) rather
  than ``repeat_interleave``, which lowers to a 5-D BROADCAST_TO XNNPACK rejects.
- The running max starts at the dtype's lowest finite value, never ``-inf``, so
  a block whose keys are all masked gives ``exp(-inf - finite) = 0`` and not
  ``exp(-inf + inf) = NaN``; a row with no visible key ends with ``l = 0`` and
  ``acc = 0`` and returns 0, which is what torch's own SDPA returns.
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch

from edge_flash.validation import check_attention_inputs, check_block_size

# Defaults measured on this machine for TinyLlama's attention shape at T = S =
# 2048 in LiteRT (FACTS.md): kv 128 + q 256 gave the lowest peak memory with
# latency near the fused standard path; smaller blocks grow the unrolled graph.
DEFAULT_Q_BLOCK_SIZE = 256
DEFAULT_KV_BLOCK_SIZE = 128


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    head_size: int,
    mask: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    softcap: Optional[float] = None,
    alibi_bias: Optional[torch.Tensor] = None,
    *,
    q_block_size: int = DEFAULT_Q_BLOCK_SIZE,
    kv_block_size: int = DEFAULT_KV_BLOCK_SIZE,
) -> torch.Tensor:
    """Scaled dot-product attention computed block by block with online softmax.

    Args:
      q: queries, [B, T, N, H].
      k, v: keys and values, [B, S, G, H], with N % G == 0 (MHA, GQA, MQA);
        query head n reads KV head n // (N // G), as litert-torch's
        ``repeat_interleave`` does.
      head_size: H; sets the default scale.
      mask: additive float mask broadcastable to [B, 1, T, S] or [B, N, T, S]
        (0 to keep, -inf or a large negative to drop). ``None`` (with no
        ``alibi_bias``) means top-left causal, as
        ``F.scaled_dot_product_attention(is_causal=True)``.
      scale: multiplies q.k; defaults to 1 / sqrt(head_size).
      softcap: if set, scores become ``softcap * tanh(scores / softcap)``
        before the mask is added, as litert-torch does.
      alibi_bias: additive bias broadcastable like ``mask``; it is multiplied
        by ``scale`` and added to the mask. As in litert-torch, an alibi bias
        with ``mask=None`` is not causal.
      q_block_size, kv_block_size: rows of queries and columns of keys per
        block; any positive ints, need not divide T or S.

    Returns:
      [B, T, N, H] in q's dtype. Internally fp32 or wider. A query row with no
      visible key (all -inf) is 0; finite inputs never give NaN or inf.

    Raises:
      ValueError: on rank, shape, dtype, head-count, mask-shape or block-size
        errors, an empty T, S or H, or a scale or softcap that is not a finite
        number > 0, naming the argument and its value.
    """
    check_attention_inputs(q, k, v, head_size, mask, alibi_bias, scale, softcap)
    check_block_size("q_block_size", q_block_size)
    check_block_size("kv_block_size", kv_block_size)
    if scale is None:
        scale = 1.0 / math.sqrt(head_size)
    # fp16 / bf16 inputs are computed in fp32 (like litert-torch's softmax); fp64 stays fp64.
    compute_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    batch, seq_q, num_heads, head_dim = q.shape
    seq_kv, num_kv_heads = k.shape[1], k.shape[2]
    group = num_heads // num_kv_heads  # R: query heads per KV head

    # K and V are regrouped once (they are G/N the size of Q). Q stays in its
    # [B, T, N, H] layout: each block is sliced, scaled (as litert-torch's softcap
    # path scales q) and regrouped on its own, and each block's output goes back
    # to [B, T', N, H] before the one concatenation that makes O. No Q- or O-sized
    # intermediate is made besides O itself (in LiteRT each whole-tensor transpose
    # is a copy that stays live with its neighbours).
    k_t = k.to(compute_dtype).permute(0, 2, 3, 1)  # (B, G, H, S)
    v_g = v.to(compute_dtype).transpose(1, 2)  # (B, G, S, H)

    biases = _grouped_biases(mask, alibi_bias, scale, num_kv_heads, group, compute_dtype)
    causal = mask is None and alibi_bias is None

    out_blocks = []
    for t0 in range(0, seq_q, q_block_size):
        t1 = min(t0 + q_block_size, seq_q)
        q_block = (q[:, t0:t1].to(compute_dtype) * scale).transpose(1, 2)  # (B, N, T', H)
        q_block = q_block.reshape(batch, num_kv_heads, group, t1 - t0, head_dim)  # (B, G, R, T', H)
        out_block = _attend_query_block(
            q_block, k_t, v_g, biases, causal, t0, kv_block_size, softcap
        )  # (B, G, R, T', H)
        out_block = out_block.reshape(batch, num_heads, t1 - t0, head_dim).transpose(1, 2)
        out_blocks.append(out_block)  # (B, T', N, H)
    out = out_blocks[0] if len(out_blocks) == 1 else torch.cat(out_blocks, dim=1)
    return out.to(q.dtype)  # (B, T, N, H)


def _grouped_biases(
    mask: Optional[torch.Tensor],
    alibi_bias: Optional[torch.Tensor],
    scale: float,
    num_kv_heads: int,
    group: int,
    dtype: torch.dtype,
) -> List[torch.Tensor]:
    """Returns the additive biases as 5-D views (Bm, Gm, Rm, Tm, Sm) to slice per block.

    Each bias stays at its own broadcast shape; nothing is expanded to
    [B, N, T, S], so a [1, N, 1, S] alibi bias costs N*S, not N*T*S.
    """
    biases = []
    if mask is not None:
        biases.append(mask)
    if alibi_bias is not None:
        biases.append(alibi_bias * scale)
    grouped = []
    for bias in biases:
        bias = bias.to(dtype)
        bias = bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))  # (Bm, Nm, Tm, Sm)
        b, n, t, s = bias.shape
        if n == 1:
            grouped.append(bias.reshape(b, 1, 1, t, s))
        else:
            grouped.append(bias.reshape(b, num_kv_heads, group, t, s))
    return grouped


def _slice_bias(bias: torch.Tensor, t0: int, t1: int, s0: int, s1: int) -> torch.Tensor:
    """Slices a (Bm, Gm, Rm, Tm, Sm) bias to rows [t0, t1) and columns [s0, s1)."""
    if bias.shape[3] != 1:
        bias = bias[:, :, :, t0:t1]
    if bias.shape[4] != 1:
        bias = bias[:, :, :, :, s0:s1]
    return bias


def _causal_block(
    t0: int, t1: int, s0: int, s1: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Top-left causal additive mask for rows [t0, t1) and columns [s0, s1): (T', S')."""
    # Global row t0 + r may see column s0 + c iff s0 + c <= t0 + r, so -inf is
    # kept where c - r >= t0 - s0 + 1 (triu's diagonal). A constant under export.
    # Built on the scores' device: a CPU block cannot be added to CUDA or meta scores.
    block = torch.full((t1 - t0, s1 - s0), float("-inf"), dtype=dtype, device=device)
    return block.triu(t0 - s0 + 1)


def _attend_query_block(
    q_block: torch.Tensor,
    k_t: torch.Tensor,
    v_g: torch.Tensor,
    biases: List[torch.Tensor],
    causal: bool,
    t0: int,
    kv_block_size: int,
    softcap: Optional[float],
) -> torch.Tensor:
    """Online softmax of one query block over all KV blocks.

    q_block (B, G, R, T', H) already scaled; k_t (B, G, H, S); v_g (B, G, S, H).
    Returns (B, G, R, T', H).
    """
    batch, num_kv_heads, group, rows, head_dim = q_block.shape
    t1 = t0 + rows
    lowest = torch.finfo(q_block.dtype).min
    q_flat = q_block.reshape(batch, num_kv_heads, group * rows, head_dim)  # (B, G, R*T', H)

    running_max = running_sum = acc = None
    for s0 in range(0, k_t.shape[-1], kv_block_size):
        s1 = min(s0 + kv_block_size, k_t.shape[-1])
        if causal and s0 > t1 - 1:
            break  # Every later column is above the diagonal for every row here.
        scores = _block_scores(q_flat, k_t, biases, causal, softcap, rows, t0, s0, s1)
        # Clamped at `lowest`, so a fully masked row keeps a finite max and
        # exp(-inf - max) is 0, never exp(-inf + inf) = NaN.
        block_max = torch.clamp(scores.amax(dim=-1, keepdim=True), min=lowest)  # (B, G, R, T', 1)
        new_max = block_max if running_max is None else torch.maximum(running_max, block_max)
        probs = torch.exp(scores - new_max)  # (B, G, R, T', S')
        probs_flat = probs.reshape(batch, num_kv_heads, group * rows, s1 - s0)  # (B, G, R*T', S')
        weighted = (probs_flat @ v_g[:, :, s0:s1]).reshape(q_block.shape)  # (B, G, R, T', H)
        block_sum = probs.sum(dim=-1, keepdim=True)
        if running_max is None:  # First block: nothing to rescale (saves ops in the graph).
            running_sum, acc = block_sum, weighted
        else:
            correction = torch.exp(running_max - new_max)  # <= 1: rescales the old sums.
            running_sum = running_sum * correction + block_sum
            acc = acc * correction + weighted
        running_max = new_max
    # A row that saw a key has running_sum >= 1 (its max contributes exp(0));
    # a row that saw none has acc = 0 and running_sum = 0, and 0 / tiny = 0.
    return acc / torch.clamp(running_sum, min=torch.finfo(q_block.dtype).tiny)


def _block_scores(
    q_flat: torch.Tensor,
    k_t: torch.Tensor,
    biases: List[torch.Tensor],
    causal: bool,
    softcap: Optional[float],
    rows: int,
    t0: int,
    s0: int,
    s1: int,
) -> torch.Tensor:
    """Scores of query rows [t0, t0 + rows) against keys [s0, s1): (B, G, R, T', S').

    q_flat (B, G, R*T', H) already scaled; softcap then biases then causal mask,
    in litert-torch's order.
    """
    batch, num_kv_heads, group_rows, _ = q_flat.shape
    scores = q_flat @ k_t[:, :, :, s0:s1]  # (B, G, R*T', S')
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.reshape(batch, num_kv_heads, group_rows // rows, rows, s1 - s0)
    for bias in biases:
        scores = scores + _slice_bias(bias, t0, t0 + rows, s0, s1)
    if causal and s1 - 1 > t0:
        scores = scores + _causal_block(t0, t0 + rows, s0, s1, scores.dtype, scores.device)
    return scores
