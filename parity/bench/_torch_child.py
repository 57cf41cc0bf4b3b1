"""Child process: peak memory and latency of one attention call in PyTorch eager.

Run as ``python -m parity.bench._torch_child CASE_JSON REPEATS [OUTPUT.npy]``; prints one JSON
line. One fresh process per case, so allocator caches and earlier cases do not
hide or inflate a peak.

Method (also in ``parity.bench.method``): one warm-up call (not measured); then
``call_peak_bytes`` = the peak of tensor bytes allocated during one call, from
``parity.memory.peak_bytes_during`` (torch.profiler allocation events replayed in
order; where that module is missing, the peak RSS below); ``peak_bytes`` = that
plus the bytes of Q, K and V, which are live during the call but allocated
before it; ``peak_rss_bytes`` = VmHWM minus VmRSS around one call (with
``MALLOC_MMAP_THRESHOLD_=65536`` set by the parent); latency = wall time of each
of ``repeats`` calls, median reported.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from parity.bench import cases
from parity.bench.cases import BenchCase
from parity.bench.procmem import peak_since, reset_peak


def _attention_call(case: BenchCase):
    """Returns a no-argument function computing the case's attention on seeded inputs."""
    from litert_torch.generative.layers.scaled_dot_product_attention import (
        scaled_dot_product_attention,
    )

    from edge_flash import flash_attention

    shape = case.shape
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(shape.batch, case.seq_q, shape.num_heads, shape.head_dim, generator=generator)
    kv_shape = (shape.batch, case.seq_kv, shape.num_kv_heads, shape.head_dim)
    k, v = torch.randn(kv_shape, generator=generator), torch.randn(kv_shape, generator=generator)
    head_dim = shape.head_dim
    if case.impl == "standard-fused":  # litert-torch's standard, default SDPA backend
        return lambda: scaled_dot_product_attention(q, k, v, head_dim)
    if case.impl == "standard-math":  # the same, forced onto the math backend

        def _math():
            with sdpa_kernel(SDPBackend.MATH):
                return scaled_dot_product_attention(q, k, v, head_dim)

        return _math
    if case.impl == "flash":
        blocks = {"q_block_size": case.q_block_size, "kv_block_size": case.kv_block_size}
        return lambda: flash_attention(q, k, v, head_dim, **blocks)
    raise ValueError(
        f"impl ({case.impl!r}) is not a torch impl; expected one of standard-fused,"
        " standard-math, flash"
    )


def _output_bytes(case: BenchCase) -> int:
    shape = case.shape
    return shape.batch * case.seq_q * shape.num_heads * shape.head_dim * shape.bytes_per_element


def _profiler_peak(call) -> int | None:
    """Peak live tensor bytes of one call via parity.memory, or None where it is missing."""
    try:
        from parity.memory import peak_bytes_during
    except ImportError:  # parity.memory belongs to the property suite; the row says which ran
        return None
    return int(peak_bytes_during(call))


def measure(case: BenchCase, repeats: int, save_output: str = "") -> dict:
    """Measures the case in this process; returns the measurements as a dict.

    With ``save_output``, the output is saved there (.npy) after measuring.
    """
    call = _attention_call(case)
    with torch.inference_mode():
        output = call()  # warm-up: kernels, thread pool, first-touch of allocator pages
        before = reset_peak()
        call()
        peak_rss = peak_since(before)
        call_peak, method = _profiler_peak(call), "torch.profiler replay"
        if call_peak is None:
            call_peak, method = peak_rss, "peak RSS (parity.memory not available)"
        samples_ms, cpu_ms = [], []
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            call()
            samples_ms.append((time.perf_counter() - start) * 1e3)
            cpu_ms.append((time.process_time() - cpu_start) * 1e3)
    if save_output:
        import numpy as np

        np.save(save_output, output.numpy())
    # Q, K and V are live throughout the call but allocated before it; counting them
    # makes the peak comparable with the floor (Q, K, V, O) and with LiteRT's peak.
    input_bytes = cases.floor_bytes(case.shape, case.seq_q, case.seq_kv) - _output_bytes(case)
    return {
        "peak_bytes": call_peak + input_bytes,
        "call_peak_bytes": call_peak,
        "input_bytes": input_bytes,
        "peak_method": method,
        "peak_rss_bytes": peak_rss,
        "samples_ms": samples_ms,
        "median_ms": statistics.median(samples_ms),
        "median_cpu_ms": statistics.median(cpu_ms),
        "outputs_finite": bool(torch.isfinite(output).all()),
        "num_threads": torch.get_num_threads(),
    }


def main(argv: list[str]) -> int:
    case = BenchCase.from_dict(json.loads(argv[0]))
    save_output = argv[2] if len(argv) > 2 else ""
    print(json.dumps(measure(case, int(argv[1]), save_output)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
