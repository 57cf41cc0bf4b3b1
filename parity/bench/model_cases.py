"""Whole-model benchmark cases: the TinyLlama-shaped 2-layer model in LiteRT.

One converted file per (impl, length, chunk) holds both signatures:
``prefill_<R>`` and ``decode`` (T = 1 at the last position, S = L). One-shot
prefill has R = L (T = S = L, an empty cache filled by the prompt); chunked
prefill (the long-context path, LiteRT-LM's way) has R = ``CHUNK_ROWS`` and
fills the L slots in L / R calls, the cache carried from call to call, with
the kernel blocking over KV only (``q_block_size`` = R) and decode on the
standard path (``_model_convert_child.flash_min_rows``). Its graph grows with
S / kv_block per layer instead of (T / q_block)(S / kv_block). Every variant
computes its causal mask from positions (``edge_flash.causal_mask``), so no file
stores an S x S mask.
Prefill activations = peak(prefill) - peak(decode): both children page in the
same weights and pack them once, so what remains is what prefill needs beyond
decode (see ``parity.bench.method``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from parity.bench import convert
from parity.bench.cases import DEFAULT_BLOCKS, BenchCase

_VOCAB_SIZE = 512  # parity.bench._model_convert_child.VOCAB_SIZE (no torch import here)
# edge_flash sources that shape the converted model (others, e.g. the runtime, do not).
_GRAPH_FILES = (
    "kernel.py", "validation.py", "integration.py", "builders.py", "hf_config.py", "loader.py",
    "convert.py", "causal_mask.py",
)  # fmt: skip
# parity sources that decide how the model is built and routed before conversion.
_RECIPE_FILES = ("bench/_model_convert_child.py",)
# parity sources that write the model's seeded checkpoint (its weights are in the file).
_CHECKPOINT_FILES = ("random_checkpoints.py", "exact_random.py")
# Chunked prefill: rows per call, as LiteRT-LM's prefill signatures (512 is
# edge_flash's "auto" threshold, so every chunk takes the flash path), and the
# blocks: one query block per chunk (KV-only blocking) and the kernel's KV block.
CHUNK_ROWS = 512
CHUNKED_BLOCKS = (CHUNK_ROWS, DEFAULT_BLOCKS[1])
# One-shot flash prefill is measured up to this length only: its graph unrolls
# (T / q_block)(S / kv_block) block pairs per layer, and at 8192 its conversion
# had not finished after 889 s and 5.7 GB (4096: 236 s; README). Chunked prefill
# is the long-context path.
ONE_SHOT_FLASH_MAX = 4096


def model_cases(lengths: tuple[int, ...]) -> list[BenchCase]:
    """Prefill then decode at each length (decode after its prefill): standard
    one-shot, flash one-shot up to ``ONE_SHOT_FLASH_MAX``, and flash with chunked
    prefill where the length holds whole chunks."""
    cases = []
    for length in lengths:
        variants = [("standard", (None, None), None)]
        if length <= ONE_SHOT_FLASH_MAX:
            variants.append(("flash", DEFAULT_BLOCKS, None))
        if length % CHUNK_ROWS == 0:
            variants.append(("flash", CHUNKED_BLOCKS, CHUNK_ROWS))
        for impl, blocks, chunk in variants:
            cases.append(BenchCase("litert", "model-prefill", impl, length, length, *blocks,
                                   prefill_chunk=chunk))  # fmt: skip
            cases.append(BenchCase("litert", "model-decode", impl, 1, length, *blocks,
                                   prefill_chunk=chunk))  # fmt: skip
    return cases


def _model_file(case: BenchCase, directory: Path) -> Path:
    """Cache path of the case's converted model (shared by its prefill and decode cases)."""
    fields = {
        "impl": case.impl_label,  # with its blocks and chunk
        "seq_kv": case.seq_kv,
        "prefill_rows": case.prefill_rows,
        "edge_flash": convert.package_digest("edge_flash", _GRAPH_FILES),
        "checkpoint_writer": convert.package_digest("parity", _CHECKPOINT_FILES),
        "recipe": convert.package_digest("parity", _RECIPE_FILES),
        "versions": convert.stack_versions(),
        "vocab": _VOCAB_SIZE,
    }
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    return directory / f"model-tinyllama2l-{case.impl_label}-kv{case.seq_kv}-{key}.tflite"


def ensure_model_converted(case: BenchCase, cache: Path | None) -> tuple[Path, dict]:
    """The case's converted model file (converting it first if missing) and its conversion.

    The conversion's record (seconds, bytes) is kept beside the file, so a cached
    file still reports how long its conversion took.
    """
    directory = convert.cache_dir() if cache is None else Path(cache)
    path = _model_file(case, directory)
    record = path.with_suffix(".conversion.json")
    if path.exists() and record.exists():
        return path, {**json.loads(record.read_text()), "cached": True}
    positions = max(case.seq_kv, 2048)  # TinyLlama's 2048, raised for longer caches
    checkpoint = directory / "checkpoints" / f"tinyllama-shaped-2layer-v{_VOCAB_SIZE}-p{positions}"
    info = convert.run_convert_child(
        "parity.bench._model_convert_child",
        [json.dumps(decode_partner(case).to_dict()), str(checkpoint), str(path)],
        case.case_id,
    )
    record.write_text(json.dumps(info))
    return path, info


def measure_model_case(
    case: BenchCase, repeats: int, cache: Path | None, run_child: Callable[[str, list], dict]
) -> dict:
    """Measures one signature of the case's model in a fresh LiteRT child."""
    path, conversion = ensure_model_converted(case, cache)
    prefill = case.target == "model-prefill"
    fills = {"tokens": f"tokens:{_VOCAB_SIZE}"}
    fills["input_pos"] = "arange" if prefill else f"value:{case.seq_kv - 1}"
    job = {
        "model_path": str(path),
        "signature": f"prefill_{case.prefill_rows}" if prefill else "decode",
        "repeats": repeats,
        "fills": fills,
        "default_float_fill": "zeros",  # an empty KV cache
    }
    if prefill and case.prefill_chunk is not None:
        job["chunks"] = case.seq_kv // case.prefill_chunk  # one timed call = every chunk
    result = run_child("parity.bench._litert_child", [json.dumps(job)])
    if result["torch_loaded"]:
        raise RuntimeError(f"{case.case_id}: torch was loaded in the LiteRT child")
    return {**result, "conversion": conversion, "model_path": str(path)}


def activation_bytes(prefill_outcome: dict, decode_outcome: dict) -> float | None:
    """Prefill's peak minus decode's peak of the same model file, or None if either is missing."""
    if prefill_outcome.get("status") != "measured" or decode_outcome.get("status") != "measured":
        return None
    return float(prefill_outcome["peak_bytes"] - decode_outcome["peak_bytes"])


def decode_partner(case: BenchCase) -> BenchCase:
    """The prefill case whose file a decode case shares (a prefill case is its own)."""
    return BenchCase("litert", "model-prefill", case.impl, case.seq_kv, case.seq_kv,
                     case.q_block_size, case.kv_block_size,
                     prefill_chunk=case.prefill_chunk)  # fmt: skip
