"""Input validation for attention functions with litert-torch's SDPA contract.

Every check raises ``ValueError`` naming the argument, its value and what was
expected, so a user who wires the kernel in wrongly learns what to fix.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch


def check_attention_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    head_size: int,
    mask: Optional[torch.Tensor],
    alibi_bias: Optional[torch.Tensor],
    scale: Optional[float] = None,
    softcap: Optional[float] = None,
) -> None:
    """Checks q [B, T, N, H], k and v [B, S, G, H], the optional biases, scale and softcap.

    T, S and H must be at least 1 (an empty query, key set or head has no
    attention to compute). ``scale`` and ``softcap`` must each be None or a
    finite number > 0: litert-torch states no range for either, but a zero or
    non-finite value gives NaN, and a negative softcap only hides a sign error
    (``c * tanh(x / c)`` is even in ``c``).

    Raises:
        ValueError: on any rank, shape, size, dtype or head-count mismatch, or a
          bad scale or softcap, naming the argument and its value.
    """
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() != 4:
            raise ValueError(
                f"{name} must have rank 4 ([B, T, N, H] for q, [B, S, G, H] for k and v),"
                f" got shape {tuple(tensor.shape)}"
            )
        if not tensor.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor, got dtype {tensor.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(
            f"q, k and v must share one dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}"
        )
    batch, _, num_heads, head_dim = q.shape
    if k.shape != v.shape:
        raise ValueError(
            f"k and v must have the same shape [B, S, G, H], got k {tuple(k.shape)}"
            f" and v {tuple(v.shape)}"
        )
    kv_batch, _, num_kv_heads, kv_head_dim = k.shape
    if kv_batch != batch:
        raise ValueError(f"batch of k/v ({kv_batch}) must equal batch of q ({batch})")
    if kv_head_dim != head_dim:
        raise ValueError(f"head_dim of k/v ({kv_head_dim}) must equal head_dim of q ({head_dim})")
    if num_kv_heads == 0 or num_heads % num_kv_heads != 0:
        raise ValueError(
            f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})"
        )
    if not isinstance(head_size, int) or isinstance(head_size, bool) or head_size != head_dim:
        raise ValueError(
            f"head_size ({head_size!r}) must equal the last dimension of q ({head_dim})"
        )
    seq_q, seq_kv = q.shape[1], k.shape[1]
    for name, size, tensor in (
        ("seq_q", seq_q, "q"),
        ("seq_kv", seq_kv, "k"),
        ("head_dim", head_dim, "q"),
    ):
        if size < 1:
            shape = tuple((q if tensor == "q" else k).shape)
            raise ValueError(f"{name} ({size}) must be at least 1, got {tensor} of shape {shape}")
    for name, value in (("scale", scale), ("softcap", softcap)):
        if value is not None:
            check_positive_finite(name, value)
    for name, bias in (("mask", mask), ("alibi_bias", alibi_bias)):
        if bias is not None:
            check_bias(name, bias, batch, num_heads, seq_q, seq_kv)


def check_bias(
    name: str, bias: torch.Tensor, batch: int, num_heads: int, seq_q: int, seq_kv: int
) -> None:
    """Checks an additive bias broadcasts to [B, 1, T, S] or [B, N, T, S]."""
    if not isinstance(bias, torch.Tensor) or not bias.is_floating_point():
        got = bias.dtype if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise ValueError(
            f"{name} must be an additive floating tensor (0 to keep, -inf or a large"
            f" negative to mask), got {got}"
        )
    if bias.dim() > 4:
        raise ValueError(f"{name} must have rank <= 4, got shape {tuple(bias.shape)}")
    shape = (1,) * (4 - bias.dim()) + tuple(bias.shape)
    target = (batch, num_heads, seq_q, seq_kv)
    for size, want in zip(shape, target):
        if size not in (1, want):
            raise ValueError(
                f"{name} of shape {tuple(bias.shape)} is not broadcastable to"
                f" [B, N, T, S] = {list(target)}"
            )


def check_positive_finite(name: str, value: float) -> None:
    """Checks an optional float argument (scale, softcap) is a finite number > 0."""
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} ({value!r}) must be a finite number > 0, or None")


def check_block_size(name: str, value: int) -> None:
    """Checks a block size is a positive int."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} ({value!r}) must be a positive int")
