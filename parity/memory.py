"""Peak memory allocated by PyTorch during one call, from the profiler's allocation events.

``peak_bytes_during(fn)`` runs ``fn`` under ``torch.profiler`` with
``profile_memory=True``, replays every allocation and free in time order and
returns the running maximum of bytes allocated above the level at the start
(FACTS.md: this agreed within 0.5 % with peak RSS). Tensors that exist before
the call (inputs) do not count; what ``fn`` returns does, as it is alive at
the end.

    python -m parity.memory      # TinyLlama's attention shape at T = S = 2048

prints the blockwise kernel next to torch's math-path and fused attention.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile

__all__ = ["peak_bytes_during"]


def peak_bytes_during(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated on the CPU during ``fn()`` above the level before it.

    Args:
      fn: called once, with no arguments; its result is kept alive until the
        profile ends, so the output counts.

    Returns:
      The running maximum of (allocated - freed) bytes over the call, >= 0.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    del result
    # Allocation events carry a signed alloc_size (negative for frees). The
    # event tree is the profiler's only per-allocation record (prof.events()
    # folds allocations inside an op into the op's net usage, hiding
    # temporaries), so this reads its experimental API.
    deltas = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == torch._C._profiler._EventType.Allocation:
            if node.extra_fields.device.type == "cpu":
                deltas.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    level = peak = 0
    for _, size in sorted(deltas, key=lambda event: event[0]):
        level += size
        peak = max(peak, level)
    return peak


def _attention_inputs(seq_len: int, num_heads: int, num_kv_heads: int, head_dim: int) -> dict:
    """TinyLlama-shaped q [1, T, N, H], k and v [1, S, G, H], fp32, seeded."""
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, seq_len, num_heads, head_dim, generator=generator)
    k = torch.randn(1, seq_len, num_kv_heads, head_dim, generator=generator)
    v = torch.randn(1, seq_len, num_kv_heads, head_dim, generator=generator)
    return dict(q=q, k=k, v=v, head_size=head_dim)


def measure_attention(seq_len=2048, num_heads=32, num_kv_heads=4, head_dim=64) -> list:
    """Rows (variant, mask, peak MB) for the blockwise kernel and litert's standard paths."""
    from litert_torch.generative.layers.scaled_dot_product_attention import (
        scaled_dot_product_attention as standard,
    )
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from edge_flash import DEFAULT_KV_BLOCK_SIZE, DEFAULT_Q_BLOCK_SIZE, flash_attention

    inputs = _attention_inputs(seq_len, num_heads, num_kv_heads, head_dim)
    causal = torch.full((1, 1, seq_len, seq_len), -math.inf).triu(1)  # (1, 1, T, S), as models pass

    def math_path(**kwargs):
        with sdpa_kernel(SDPBackend.MATH):
            return standard(**kwargs)

    blocks = f"q{DEFAULT_Q_BLOCK_SIZE} kv{DEFAULT_KV_BLOCK_SIZE}"
    variants = [
        (f"edge_flash.flash_attention ({blocks})", flash_attention),
        ("litert standard, math path (SDPBackend.MATH)", math_path),
        ("litert standard, default (fused CPU flash)", standard),
    ]
    rows = []
    for name, fn in variants:
        for mask_name, mask in (("None", None), ("[1,1,T,S] causal", causal)):
            peak = peak_bytes_during(lambda fn=fn, mask=mask: fn(**inputs, mask=mask))
            rows.append((name, mask_name, peak / 1e6))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=2048)
    args = parser.parse_args()
    scores_mb = 32 * args.seq_len * args.seq_len * 4 / 1e6
    print(
        f"B=1 N=32 G=4 H=64 fp32, T = S = {args.seq_len}; one fp32 score tensor: {scores_mb:.0f} MB"
    )
    for name, mask_name, peak_mb in measure_attention(seq_len=args.seq_len):
        print(f"{name:48s} mask={mask_name:18s} peak {peak_mb:8.1f} MB")


if __name__ == "__main__":
    main()
