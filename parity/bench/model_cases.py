"""Whole-model benchmark cases: the TinyLlama-shaped 2-layer model in LiteRT.

One converted file per (impl, length) holds both signatures: ``prefill_<L>``
(T = S = L, an empty cache filled by the prompt) and ``decode`` (T = 1 at the
last position, S = L). Prefill activations = peak(prefill) - peak(decode):
both children page in the same weights and pack them once, so what remains is
what prefill needs beyond decode (see ``parity.bench.method``).
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
    "convert.py",
)  # fmt: skip
# parity sources that write the model's seeded checkpoint (its weights are in the file).
_CHECKPOINT_FILES = ("random_checkpoints.py", "exact_random.py")


def model_cases(lengths: tuple[int, ...]) -> list[BenchCase]:
    """Prefill then decode, standard then flash, at each length (decode after its prefill)."""
    cases = []
    for length in lengths:
        for impl, blocks in (("standard", (None, None)), ("flash", DEFAULT_BLOCKS)):
            cases.append(BenchCase("litert", "model-prefill", impl, length, length, *blocks))
            cases.append(BenchCase("litert", "model-decode", impl, 1, length, *blocks))
    return cases


def _model_file(case: BenchCase, directory: Path) -> Path:
    """Cache path of the case's converted model (shared by its prefill and decode cases)."""
    fields = {
        "impl": case.impl_label,
        "seq_kv": case.seq_kv,
        "edge_flash": convert.package_digest("edge_flash", _GRAPH_FILES),
        "checkpoint_writer": convert.package_digest("parity", _CHECKPOINT_FILES),
        "versions": convert.stack_versions(),
        "vocab": _VOCAB_SIZE,
    }
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    return directory / f"model-tinyllama2l-{case.impl_label}-kv{case.seq_kv}-{key}.tflite"


def ensure_model_converted(case: BenchCase, cache: Path | None) -> tuple[Path, dict]:
    directory = convert.cache_dir() if cache is None else Path(cache)
    path = _model_file(case, directory)
    if path.exists():
        return path, {"cached": True, "bytes": path.stat().st_size}
    positions = max(case.seq_kv, 2048)  # TinyLlama's 2048, raised for longer caches
    checkpoint = directory / "checkpoints" / f"tinyllama-shaped-2layer-v{_VOCAB_SIZE}-p{positions}"
    prefill = BenchCase("litert", "model-prefill", case.impl, case.seq_kv, case.seq_kv,
                        case.q_block_size, case.kv_block_size)  # fmt: skip
    info = convert.run_convert_child(
        "parity.bench._model_convert_child",
        [json.dumps(prefill.to_dict()), str(checkpoint), str(path)],
        case.case_id,
    )
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
        "signature": f"prefill_{case.seq_q}" if prefill else "decode",
        "repeats": repeats,
        "fills": fills,
        "default_float_fill": "zeros",  # an empty KV cache
    }
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
    """The prefill case whose file a decode case shares."""
    return BenchCase("litert", "model-prefill", case.impl, case.seq_kv, case.seq_kv,
                     case.q_block_size, case.kv_block_size)  # fmt: skip
