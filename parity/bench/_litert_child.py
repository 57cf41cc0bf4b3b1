"""Child process: peak memory and latency of one signature of one .tflite file.

Run as ``python -m parity.bench._litert_child JOB_JSON`` in a fresh process with
``MALLOC_MMAP_THRESHOLD_=65536``; prints one JSON line. Only numpy, ai_edge_litert
and the standard library are loaded (checked: the result says whether torch was).

Method (also in ``parity.bench.method``):
1. A throwaway interpreter reads the signature's inputs; it is deleted, so shared
   libraries are loaded and its memory is returned before the baseline.
2. The inputs are made in numpy (the caller's copies, not counted).
3. Baseline: ``clear_refs`` then VmRSS. Then the measured interpreter is created
   with the XNNPACK delegate (ai_edge_litert's default op resolver; with
   ``xnnpack`` false, the builtin kernels without it), the warm-up
   signatures run (whole model: the other signature pages in and packs weights),
   and the measured signature runs once (warm-up, not timed) and ``repeats`` times.
4. ``peak_bytes`` = VmHWM minus the baseline: everything the runtime held at its
   worst, including its own copies of inputs and outputs and the caller's copy of
   the output. ``transient_bytes`` = VmHWM minus VmRSS around one timed call
   alone: LiteRT keeps its arena between calls, so this is only the caller's
   fresh copy of the output (measured: one O, e.g. 16.7 MB at T = 2048).
5. Latency: wall time of each timed call (copy in, invoke, copy out); median reported.
6. With ``save_output``, the warm-up call's output is saved (.npy) after measuring.
7. With ``chunks`` = n (chunked prefill), one call is n runs of the signature over
   consecutive positions (``input_pos`` 0..R-1, R..2R-1, ...), each run's KV cache
   outputs fed to the next; the first starts from the job's cache inputs. Peak and
   latency then cover the whole n-run prefill.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from parity.bench.procmem import peak_since, reset_peak

# LiteRT's builtin kernels without the default (XNNPACK) delegate: the job's
# "xnnpack": false, to tell the graph's own memory from the delegate's.
_BUILTIN_ONLY = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES


def _make_inputs(details: dict, fills: dict, seed: int, float_fill: str = "randn") -> dict:
    """numpy inputs per signature input.

    Fill rules: "randn", "zeros", "arange", "tokens:V" (uniform ints below V) or
    "value:N"; inputs without a rule get ``float_fill`` (floats) or "zeros" (ints).
    """
    rng = np.random.default_rng(seed)
    inputs = {}
    for name, detail in sorted(details.items()):
        shape, dtype = tuple(int(d) for d in detail["shape"]), detail["dtype"]
        rule = fills.get(name, float_fill if np.issubdtype(dtype, np.floating) else "zeros")
        if rule == "randn":
            inputs[name] = rng.standard_normal(shape).astype(dtype)
        elif rule == "zeros":
            inputs[name] = np.zeros(shape, dtype)
        elif rule == "arange":
            inputs[name] = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
        elif rule.startswith("value:"):
            inputs[name] = np.full(shape, int(rule.split(":")[1]), dtype)
        elif rule.startswith("tokens:"):
            inputs[name] = rng.integers(0, int(rule.split(":")[1]), shape).astype(dtype)
        else:
            raise ValueError(f"fill rule for input {name!r} ({rule!r}) is not known")
    return inputs


def _signature_inputs(model_path: str, signatures: list, num_threads: int) -> dict:
    probe = Interpreter(model_path=model_path, num_threads=num_threads)
    details = {sig: probe.get_signature_runner(sig).get_input_details() for sig in signatures}
    del probe
    gc.collect()
    return details


def _prefill_in_chunks(runner, inputs: dict, chunks: int) -> dict:
    """Runs the signature ``chunks`` times over consecutive positions; the last outputs.

    ``inputs["input_pos"]`` (R,) gives the dtype and R; every ``kv_cache_*`` output
    is the next run's input of that name (litert-torch names them alike).
    """
    rows, dtype = inputs["input_pos"].shape[0], inputs["input_pos"].dtype
    state = dict(inputs)
    for chunk in range(chunks):
        state["input_pos"] = np.arange(chunk * rows, (chunk + 1) * rows, dtype=dtype)
        outputs = runner(**state)
        state.update({n: v for n, v in outputs.items() if n.startswith("kv_cache_")})
    missing = sorted(n for n in inputs if n.startswith("kv_cache_") and n not in outputs)
    if chunks > 1 and missing:
        raise ValueError(f"chunked prefill: the signature does not output the cache {missing}")
    return outputs


def measure(job: dict) -> dict:
    """Runs the job (see module docstring); returns the measurements as a dict."""
    signature, warmups = job["signature"], job.get("warmup_signatures", [])
    threads = job.get("num_threads", 2)
    details = _signature_inputs(job["model_path"], [signature, *warmups], threads)
    fills, float_fill = job.get("fills", {}), job.get("default_float_fill", "randn")
    inputs = {sig: _make_inputs(d, fills, 0, float_fill) for sig, d in details.items()}

    baseline = reset_peak()
    xnnpack = job.get("xnnpack", True)
    resolver = {} if xnnpack else {"experimental_op_resolver_type": _BUILTIN_ONLY}
    interpreter = Interpreter(model_path=job["model_path"], num_threads=threads, **resolver)
    for sig in warmups:
        interpreter.get_signature_runner(sig)(**inputs[sig])
    runner = interpreter.get_signature_runner(signature)
    chunks = job.get("chunks", 1)

    def call() -> dict:
        if chunks == 1:
            return runner(**inputs[signature])
        return _prefill_in_chunks(runner, inputs[signature], chunks)

    overall = peak_since(baseline)  # creation, allocation, warm-up signatures
    before_first = reset_peak()
    outputs = call()  # warm-up call: first touch of the arena, packing
    first_call_bytes = peak_since(before_first)
    overall = max(overall, before_first - baseline + first_call_bytes)

    samples_ms, cpu_ms, transient = [], [], 0
    for _ in range(job["repeats"]):
        before = reset_peak()
        start, cpu_start = time.perf_counter(), time.process_time()
        call()
        samples_ms.append((time.perf_counter() - start) * 1e3)
        cpu_ms.append((time.process_time() - cpu_start) * 1e3)
        transient = max(transient, peak_since(before))
        overall = max(overall, before - baseline + peak_since(before))
    if job.get("save_output"):  # for the parent's flash-vs-standard difference
        np.save(job["save_output"], next(iter(outputs.values())))
    return {
        "peak_bytes": overall,
        "first_call_bytes": first_call_bytes,
        "transient_bytes": transient,
        "samples_ms": samples_ms,
        "median_ms": statistics.median(samples_ms),
        "median_cpu_ms": statistics.median(cpu_ms),
        "outputs_finite": bool(all(np.isfinite(v).all() for v in outputs.values())),
        "num_threads": threads,
        "chunks": chunks,
        "xnnpack": xnnpack,
        "torch_loaded": "torch" in sys.modules,
    }


def main(argv: list[str]) -> int:
    print(json.dumps(measure(json.loads(argv[0]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
