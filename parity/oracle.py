"""Float64 reference attention: the oracle every implementation is measured against.

``reference_attention`` implements litert-torch's ``scaled_dot_product_attention``
contract exactly, in float64, the plain way (one score tensor, one softmax), so
a reader can check it against the contract line by line:

- q [B, T, N, H], k and v [B, S, G, H]; query head n reads KV head n // (N // G).
- scores = scale * q.k, scale defaulting to 1 / sqrt(head_size).
- softcap: scores become ``softcap * tanh(scores / softcap)`` before any bias.
- mask: additive, broadcastable to [B, N, T, S]; ``alibi_bias * scale`` is
  added to it. With ``mask=None`` and no alibi the mask is top-left causal
  (query row i sees keys 0..i, as ``F.scaled_dot_product_attention(is_causal=True)``);
  with ``mask=None`` and an alibi bias there is no causal mask.
- A query row whose keys are all masked with -inf returns 0.

Finite large-negative masks (-1e9, finfo.min) are part of the contract, and the
oracle needs a rule for them. In a row where some key is visible they are exact
in float64: exp(-1e9) is 0, as it is in fp32. A row where *every* key carries a
mask at or below ``MASKED_BIAS`` is different: fp32 adds the score to the mask
and rounds, and at |mask| >= 1e4 one ulp is >= 1e-3, so the score is partly or
wholly absorbed (at -1e9 an fp32 result is the plain mean of the values, while
float64 still sees the scores). Such a row has no answer an fp32 implementation
could be held to, so the oracle marks it ``UNDETERMINED`` and gives NaN there;
comparisons skip it and tests only require a finite output inside the convex
hull of the values whose bias is finite.

The oracle also returns a per-element ``rounding_scale``: a first-order
estimate, in units of the unit roundoff, of the error a correct implementation
working in a given precision makes on these inputs. ``parity.tolerances`` turns
it into the floor of the error model. See ``rounding_scale`` below.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch

# Bias at or below this counts as "masked" when deciding whether a row has any
# visible key. 1e4 is the smallest magnitude masks take in practice (old HF
# models use -1e4; others -1e9, -65504, finfo.min, -inf), and at 1e4 one fp32
# ulp is 9.8e-4, far above what the owner's 1e-4 bound could absorb.
MASKED_BIAS = -1.0e4

# Row states, per (B, T, N).
VISIBLE = 0  # at least one key has bias > MASKED_BIAS: the oracle's softmax is the answer
ALL_MASKED = 1  # every key is -inf: the contract says 0
UNDETERMINED = 2  # every key <= MASKED_BIAS, some finite: fp32 absorbs the scores (see above)


@dataclasses.dataclass
class OracleResult:
    """The oracle's answer and what a comparison needs to judge an implementation.

    Attributes:
      output: [B, T, N, H] float64; 0 on ALL_MASKED rows, NaN on UNDETERMINED rows.
      rounding_scale: [B, T, N, H] float64, >= 0; error per unit roundoff that
        a correct implementation makes (see ``rounding_scale``); 0 on rows that
        are not VISIBLE.
      row_state: [B, T, N] int8 of VISIBLE / ALL_MASKED / UNDETERMINED.
      hull_keys: [B, N, T, S] bool, the keys whose values can carry weight:
        bias > MASKED_BIAS on VISIBLE rows (a key at <= -1e4 gets exp(-1e4 +
        logit range) = 0 in every float format while logits stay below ~1e3),
        a finite bias on UNDETERMINED rows, none on ALL_MASKED rows. Every
        correct output lies in the convex hull of these values.
    """

    output: torch.Tensor
    rounding_scale: torch.Tensor
    row_state: torch.Tensor
    hull_keys: torch.Tensor

    @property
    def determined(self) -> torch.Tensor:
        """[B, T, N, 1] bool: rows whose expected output is defined (not UNDETERMINED)."""
        return (self.row_state != UNDETERMINED).unsqueeze(-1)

    def select(self, batch: slice = slice(None), rows: slice = slice(None)) -> "OracleResult":
        """The result for a slice of batch rows and query rows (as if computed on that slice)."""
        return OracleResult(
            output=self.output[batch, rows],
            rounding_scale=self.rounding_scale[batch, rows],
            row_state=self.row_state[batch, rows],
            hull_keys=self.hull_keys[batch, :, rows],
        )


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    head_size: int,
    mask: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    softcap: Optional[float] = None,
    alibi_bias: Optional[torch.Tensor] = None,
) -> OracleResult:
    """Attention in float64 with litert-torch's contract (see the module docstring).

    Args: as ``edge_flash.flash_attention`` (q [B, T, N, H], k and v [B, S, G, H],
      additive mask / alibi_bias broadcastable to [B, N, T, S]); inputs of any
      floating dtype are converted to float64 exactly.

    Returns:
      An ``OracleResult``.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(head_size)
    batch, seq_q, num_heads, head_dim = q.shape
    seq_kv, num_kv_heads = k.shape[1], k.shape[2]
    group = num_heads // num_kv_heads
    q64 = q.to(torch.float64).transpose(1, 2)  # (B, N, T, H)
    k64 = k.to(torch.float64).repeat_interleave(group, dim=2).transpose(1, 2)  # (B, N, S, H)
    v64 = v.to(torch.float64).repeat_interleave(group, dim=2).transpose(1, 2)  # (B, N, S, H)

    raw = scale * (q64 @ k64.transpose(-1, -2))  # (B, N, T, S)
    # Size of the terms of each dot product: what its rounding error scales with.
    dot_size = scale * (q64.abs() @ k64.abs().transpose(-1, -2))  # (B, N, T, S)
    if softcap is not None:
        scores = softcap * torch.tanh(raw / softcap)
        # tanh' <= 1 shrinks the dot product's error; the cap itself rounds once more.
        dot_size = dot_size * (1 - torch.tanh(raw / softcap) ** 2) + scores.abs()
    else:
        scores = raw

    bias = _bias(mask, alibi_bias, scale, (batch, num_heads, seq_q, seq_kv))
    logits = scores + bias  # (B, N, T, S)
    finite_keys = torch.isfinite(bias)
    visible_keys = bias > MASKED_BIAS
    visible_row = visible_keys.any(dim=-1)  # (B, N, T)
    any_finite = finite_keys.any(dim=-1)

    # Softmax over rows that have a visible key; other rows are set below.
    probs = torch.softmax(torch.where(visible_row.unsqueeze(-1), logits, 0.0), dim=-1)
    probs = torch.where(visible_row.unsqueeze(-1), probs, 0.0)
    output = probs @ v64  # (B, N, T, H)
    scale_terms = _rounding_scale(probs, logits, dot_size, bias, v64, output)

    state = torch.full_like(visible_row, VISIBLE, dtype=torch.int8)
    state[~visible_row & ~any_finite] = ALL_MASKED
    state[~visible_row & any_finite] = UNDETERMINED
    output = torch.where((state == UNDETERMINED).unsqueeze(-1), math.nan, output)
    return OracleResult(
        output=output.transpose(1, 2),  # (B, T, N, H)
        rounding_scale=scale_terms.transpose(1, 2),  # (B, T, N, H)
        row_state=state.transpose(1, 2),  # (B, T, N)
        hull_keys=torch.where(visible_row.unsqueeze(-1), visible_keys, finite_keys),
    )


def _bias(
    mask: Optional[torch.Tensor],
    alibi_bias: Optional[torch.Tensor],
    scale: float,
    shape: tuple,
) -> torch.Tensor:
    """The total additive bias, [B, N, T, S] float64: mask + alibi * scale, or causal."""
    seq_q, seq_kv = shape[2], shape[3]
    bias = torch.zeros(shape, dtype=torch.float64)
    if mask is None and alibi_bias is None:
        # Top-left causal: row i sees keys j <= i.
        rows = torch.arange(seq_q).unsqueeze(-1)
        cols = torch.arange(seq_kv).unsqueeze(0)
        return bias.masked_fill(cols > rows, -math.inf)
    if mask is not None:
        bias = bias + mask.to(torch.float64)
    if alibi_bias is not None:
        bias = bias + alibi_bias.to(torch.float64) * scale
    return bias


def _rounding_scale(
    probs: torch.Tensor,
    logits: torch.Tensor,
    dot_size: torch.Tensor,
    bias: torch.Tensor,
    v64: torch.Tensor,
    output: torch.Tensor,
) -> torch.Tensor:
    """First-order error per unit roundoff of a correct implementation, (B, N, T, H).

    Two sources, each written as the error it causes in output[i, d]:

    1. Logit errors. Logit z_ij is a dot product plus a bias, then shifted by
       the row max before exp; each step rounds, giving an error of about
       u * c_ij with c_ij = dot_size_ij + |bias_ij| + |z_ij - max_i| (u the unit
       roundoff). Softmax turns an error dz_ij into output error
       p_ij * dz_ij * (v_jd - o_id); independent errors add in quadrature:
       sqrt(sum_j (p_ij c_ij (v_jd - o_id))^2). One-hot rows give 0 here, as
       they should: every correct implementation is exact on them.
    2. Sums and the final division. sum_j p_ij v_jd and sum_j p_ij round about
       log2 of the number of terms that matter (pairwise / blocked sums);
       we count S_eff = 1 / sum_j p_ij^2 (1 for a one-hot row, S for a flat
       one), times the size sum_j p_ij |v_jd| + |o_id|.

    The tolerance table multiplies this by the unit roundoff of the dtype and
    by a stated number of units (``parity.tolerances``).
    """
    finite = torch.isfinite(logits)
    row_max = torch.where(finite, logits, -math.inf).amax(dim=-1, keepdim=True)
    shift = torch.where(finite, (logits - row_max).abs(), 0.0)
    size = dot_size + torch.where(torch.isfinite(bias), bias.abs(), 0.0) + shift
    weight_sq = (probs * size) ** 2  # (B, N, T, S)
    # sum_j w_j (v_jd - o_id)^2 expanded into three matmuls: (B, N, T, H) each.
    spread = (
        weight_sq @ (v64**2)
        - 2 * output * (weight_sq @ v64)
        + output**2 * weight_sq.sum(-1, keepdim=True)
    )
    logit_term = spread.clamp(min=0).sqrt()
    effective_keys = 1.0 / (probs**2).sum(-1, keepdim=True).clamp(min=1e-300)
    sum_term = torch.log2(1 + effective_keys) * (probs @ v64.abs() + output.abs())
    visible = (probs.sum(-1, keepdim=True) > 0).to(torch.float64)
    return (logit_term + sum_term) * visible


def hull_bounds(v: torch.Tensor, hull_keys: torch.Tensor) -> tuple:
    """Per-coordinate min and max of the values each query row may average.

    Args:
      v: values [B, S, G, H].
      hull_keys: [B, N, T, S] bool (``OracleResult.hull_keys``).

    Returns:
      (low, high), each [B, T, N, H] float64; +inf / -inf on rows with no key.
    """
    batch, num_heads, seq_q, seq_kv = hull_keys.shape
    group = num_heads // v.shape[2]
    values = v.to(torch.float64).repeat_interleave(group, dim=2).transpose(1, 2)  # (B, N, S, H)
    values = values.unsqueeze(2)  # (B, N, 1, S, H)
    # Row chunks keep the (B, N, rows, S, H) temporaries near 4M elements.
    rows = max(1, 4_000_000 // max(1, batch * num_heads * seq_kv * v.shape[-1]))
    lows, highs = [], []
    for t0 in range(0, seq_q, rows):
        keys = hull_keys[:, :, t0 : t0 + rows].unsqueeze(-1)  # (B, N, rows, S, 1)
        lows.append(torch.where(keys, values, math.inf).amin(dim=3))
        highs.append(torch.where(keys, values, -math.inf).amax(dim=3))
    low = torch.cat(lows, dim=2).transpose(1, 2)  # (B, T, N, H)
    high = torch.cat(highs, dim=2).transpose(1, 2)  # (B, T, N, H)
    return low, high
