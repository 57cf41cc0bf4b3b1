"""Child process: converts the TinyLlama-shaped 2-layer model (standard or flash) to .tflite.

Run as ``python -m parity.bench._model_convert_child CASE_JSON CHECKPOINT_DIR OUT_PATH``.
Writes the seeded checkpoint first if it is missing (``parity.random_checkpoints``),
builds the model with ``edge_flash.build_model`` (the causal mask computed from
positions, ``edge_flash.causal_mask``, as the convert CLI does) and converts it with
``edge_flash.convert.convert_to_tflite``: signatures ``prefill_<R>`` (R = the
case's ``prefill_rows``) and ``decode`` over a KV cache of S slots. Prints one JSON
line: seconds and bytes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from parity.bench.cases import BenchCase

NUM_LAYERS = 2
VOCAB_SIZE = 512  # small: the embedding and logits would otherwise dwarf two layers
CHECKPOINT_SEED = 0


def write_checkpoint(directory: Path, max_positions: int) -> Path:
    """Writes the seeded TinyLlama-shaped checkpoint once (a marker file says it is complete)."""
    from parity.random_checkpoints import write_tinyllama_shaped_checkpoint

    marker = directory / ".complete"
    if not marker.exists():
        write_tinyllama_shaped_checkpoint(
            directory,
            num_layers=NUM_LAYERS,
            vocab_size=VOCAB_SIZE,
            seed=CHECKPOINT_SEED,
            max_position_embeddings=max_positions,
        )
        marker.write_text("ok")
    return directory


def flash_min_rows(case: BenchCase) -> int:
    """The fewest query rows routed to flash: 1 (every call) for one-shot flash; the
    chunk for chunked prefill, the long-context path, whose decode (T = 1, one score
    row per head: nothing to block) takes the standard path, as edge_flash's "auto"
    does. Measured at S = 8192 (kv blocks of 128): flash decode made the conversion
    147 s, the standard decode 51 s (README, "Long context")."""
    return case.prefill_chunk if case.prefill_chunk is not None else 1


def convert(case: BenchCase, checkpoint_dir: Path, out_path: Path) -> dict:
    """Builds and converts the case's whole model; returns {"seconds": ..., "bytes": ...}.

    Flash uses the case's block sizes; the prefill signature has the case's
    ``prefill_rows`` rows (its chunk, or T = S). ``seconds`` covers conversion
    only, not building the model.
    """
    from edge_flash import build_model, enable_flash_attention
    from edge_flash.causal_mask import use_computed_causal_mask
    from edge_flash.convert import convert_to_tflite

    seq_kv = case.seq_kv
    write_checkpoint(checkpoint_dir, max_positions=max(seq_kv, 2048))
    model = build_model(checkpoint_dir, use_flash_attention=False, mask_cache_size=seq_kv)
    use_computed_causal_mask(model)  # as the convert CLI does by default
    if case.impl == "flash":
        enable_flash_attention(
            model,
            min_seq_q=flash_min_rows(case),
            q_block_size=case.q_block_size,
            kv_block_size=case.kv_block_size,
        )
    start = time.perf_counter()
    convert_to_tflite(
        model, out_path, prefill_seq_lens=[case.prefill_rows], kv_cache_max_len=seq_kv
    )
    return {"seconds": time.perf_counter() - start, "bytes": os.path.getsize(out_path)}


def main(argv: list[str]) -> int:
    case = BenchCase.from_dict(json.loads(argv[0]))
    print(json.dumps(convert(case, Path(argv[1]), Path(argv[2]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
