"""Child process: converts one attention-alone module to a .tflite file.

Run as ``python -m parity.bench._convert_child CASE_JSON OUT_PATH``. Conversion
needs torch and litert-torch and takes up to minutes (the kernel's Python loops
unroll into the graph), so it runs in its own process and its output is cached
by ``parity.bench.convert``. Writes OUT_PATH atomically (temporary file, rename).
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from parity.bench.cases import BenchCase


class _StandardAttention(torch.nn.Module):
    """litert-torch's standard SDPA with its HLFB composite, causal via a mask buffer.

    litert-torch's decoders pass a slice of a constant causal mask cache; the
    composite needs a mask tensor, so the buffer is that cache for one call.
    """

    def __init__(self, case: BenchCase):
        super().__init__()
        mask = torch.full((1, 1, case.seq_q, case.seq_kv), float("-inf")).triu(1)  # (1, 1, T, S)
        self.register_buffer("mask", mask, persistent=False)
        self.head_dim = case.shape.head_dim

    def forward(self, q, k, v):
        from litert_torch.generative.layers.scaled_dot_product_attention import (
            scaled_dot_product_attention_with_hlfb,
        )

        return scaled_dot_product_attention_with_hlfb(q, k, v, self.head_dim, self.mask)


class _FlashAttention(torch.nn.Module):
    """edge_flash.flash_attention, causal (mask=None), at the case's block sizes."""

    def __init__(self, case: BenchCase):
        super().__init__()
        self.case = case

    def forward(self, q, k, v):
        from edge_flash import flash_attention

        return flash_attention(
            q,
            k,
            v,
            self.case.shape.head_dim,
            q_block_size=self.case.q_block_size,
            kv_block_size=self.case.kv_block_size,
        )


class _CopyFloor(torch.nn.Module):
    """Reads Q, K, V and writes an O-sized output: what LiteRT needs for I/O alone."""

    def forward(self, q, k, v):
        return q + k[:, :1, :1, :1] + v[:, :1, :1, :1]  # (B, T, N, H)


_MODULES = {"standard-hlfb": _StandardAttention, "flash": _FlashAttention, "copy": _CopyFloor}


def _sample_inputs(case: BenchCase) -> tuple[torch.Tensor, ...]:
    shape = case.shape
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(shape.batch, case.seq_q, shape.num_heads, shape.head_dim, generator=generator)
    kv_shape = (shape.batch, case.seq_kv, shape.num_kv_heads, shape.head_dim)
    return q, torch.randn(kv_shape, generator=generator), torch.randn(kv_shape, generator=generator)


def convert(case: BenchCase, out_path: str) -> dict:
    """Converts the case's module; returns {"seconds": ..., "bytes": ...}."""
    import litert_torch

    if case.impl not in _MODULES:
        raise ValueError(
            f"impl ({case.impl!r}) has no LiteRT module; expected one of {list(_MODULES)}"
        )
    module = _MODULES[case.impl]() if case.impl == "copy" else _MODULES[case.impl](case)
    start = time.perf_counter()
    edge_model = litert_torch.convert(module.eval(), _sample_inputs(case))
    partial = out_path + ".partial"
    edge_model.export(partial)
    os.replace(partial, out_path)
    return {"seconds": time.perf_counter() - start, "bytes": os.path.getsize(out_path)}


def main(argv: list[str]) -> int:
    case = BenchCase.from_dict(json.loads(argv[0]))
    print(json.dumps(convert(case, argv[1])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
