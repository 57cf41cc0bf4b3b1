"""Converting litert-torch decoder models (standard, flash or auto attention) to TFLite.

Library: ``convert_to_tflite(model, output_path, prefill_seq_lens,
kv_cache_max_len, quantize="none")`` wraps litert-torch's
``generative.utilities.converter.convert_to_tflite`` and writes atomically: the
converter writes into a temporary directory beside the target, and the file is
renamed into place only when complete, so a failure or Ctrl-C never leaves a
half-written .tflite.

CLI (the seed's ``convert_to_tflite.py``)::

    python -m edge_flash.convert --model {tiny_llama,smollm2,auto} \\
        --checkpoint_path PATH --use_flash_attention={true,false,auto} \\
        --prefill_seq_lens 256 --kv_cache_max_len 1024 \\
        --quantize {none,dynamic_int8,weight_only_int8,fp16,dynamic_int4_block32,...} \\
        --output_path DIR [--causal_mask {computed,cache}]

The causal mask is computed from the positions in the graph by default
(``edge_flash.causal_mask``); ``--causal_mask cache`` keeps litert-torch's
constant mask cache, kv_cache_max_len^2 floats stored in the file.
With no checkpoint it converts the shipped SmolLM2-135M-Instruct. It prints
progress for the long steps, then where it wrote the file, the conversion time,
the file size and the op count per signature. Every multi-word flag also takes
the other spelling (``--checkpoint-path``, ``--kv-cache-max-len``, ...;
``edge_flash.cli``).

Exit status: 0 written; 2 unusable input (bad flag or value, missing or bad
checkpoint, a conversion that cannot be done with these arguments), one line
(``--verbose`` for the traceback); 130 interrupted. Conversion checks nothing,
so it never exits 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from edge_flash.cli import EXIT_UNUSABLE, ArgumentParser
from edge_flash.integration import attention_functions
from edge_flash.runtime import tflite_op_counts

# litert-torch 0.10's quantization recipes, by its own names
# (``generative.utilities.converter.QuantizationName``), each with the file-name
# suffix litert-torch's converter gives it (``create_quantize_suffix``):
# - none: fp32 weights and activations;
# - dynamic_int8: int8 per-channel weights, activations quantized to int8 per call
#   (dynamic range), integer compute in the ops that take weights;
# - weight_only_int8: int8 per-channel weights, dequantized to fp32, float compute;
# - fp16: fp16 weights, dequantized to fp32, float compute;
# - dynamic_int4_block32 / dynamic_int4_block128: int4 weights in blocks of 32 / 128
#   along the input dimension, activations as in dynamic_int8.
# Every recipe applies to every op ai-edge-quantizer supports (litert-torch's
# ``quant_recipes.full_*_recipe``: regex ".*"), so they differ only in how.
QUANTIZE_SUFFIXES = {
    "none": "f32",
    "dynamic_int8": "q8",
    "weight_only_int8": "q8_wo",
    "fp16": "fp16",
    "dynamic_int4_block32": "q4_block32",
    "dynamic_int4_block128": "q4_block128",
}
QUANTIZE_CHOICES = tuple(QUANTIZE_SUFFIXES)
_HEARTBEAT_SECONDS = 30.0


def convert_to_tflite(
    model: torch.nn.Module,
    output_path: os.PathLike,
    prefill_seq_lens: Union[int, Sequence[int]],
    kv_cache_max_len: int,
    quantize: str = "none",
    *,
    output_name_prefix: Optional[str] = None,
    export_config=None,
    progress: bool = True,
) -> Path:
    """Converts a litert-torch decoder model to a multi-signature .tflite; returns its path.

    Signatures: ``prefill_<T>`` for each T in ``prefill_seq_lens`` (tokens
    (1, T) int32, input_pos (T,) int32, the KV cache) and ``decode`` (T = 1).
    Prefill signatures also output logits (``output_logits_on_prefill=True``)
    unless ``export_config`` says otherwise, so parity checks can read them.

    Args:
      model: e.g. from ``edge_flash.build_model``; its mask cache must cover
        ``kv_cache_max_len`` (build it with ``mask_cache_size=kv_cache_max_len``).
      output_path: a ``.tflite`` file path, or a directory (the name is then
        ``<prefix>_<quant>_ekv<kv_cache_max_len>.tflite``, ``<quant>`` from
        ``QUANTIZE_SUFFIXES``, prefix from the model class and its attention:
        ``decoderonlymodel_flash``, ...).
      prefill_seq_lens: one or more prefill lengths, each <= kv_cache_max_len.
      kv_cache_max_len: KV cache slots (prompt plus generated tokens).
      quantize: a litert-torch recipe name, one of ``QUANTIZE_CHOICES`` ("none":
        fp32; the others are described beside ``QUANTIZE_SUFFIXES``).
      export_config: litert-torch ``ExportConfig`` (default: logits on prefill).
      progress: print progress lines to stderr.

    Raises:
      ValueError / TypeError: naming the bad argument, before any work starts.
    """
    from litert_torch.generative.utilities import converter
    from litert_torch.generative.utilities.export_config import ExportConfig

    lengths = _check_lengths(prefill_seq_lens, kv_cache_max_len)
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize ({quantize!r}) must be one of {QUANTIZE_CHOICES}")
    export_config = export_config or ExportConfig(output_logits_on_prefill=True)
    _check_mask_cache(model, kv_cache_max_len, export_config)
    target = _target_path(Path(output_path), model, quantize, kv_cache_max_len, output_name_prefix)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.stem}-", dir=target.parent))
    try:
        with _Heartbeat(f"converting {len(lengths) + 1} signatures to {target.name}", progress):
            produced = converter.convert_to_tflite(
                model,
                str(scratch),
                "model",
                lengths,
                kv_cache_max_len,
                quantize=quantize,
                export_config=export_config,
            )
        os.replace(produced, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def describe_tflite(path: Path) -> str:
    """One line: size and op count per signature (plus ops inside composite bodies)."""
    counts = tflite_op_counts(path)
    size_mb = path.stat().st_size / 1e6
    signatures = {name: sum(c.values()) for name, c in counts.items() if "." not in name}
    bodies = sum(sum(c.values()) for name, c in counts.items() if "." in name)
    per_signature = ", ".join(f"{name} {ops}" for name, ops in signatures.items())
    return f"{size_mb:.1f} MB; ops: {per_signature} (+{bodies} in composite bodies)"


def default_name_prefix(model: torch.nn.Module) -> str:
    """``<model class>_<std|flash|auto>``, lower case."""
    functions = attention_functions(model)
    if not functions:
        kind = "std"
    elif all(f.min_seq_q <= 1 for f in functions):
        kind = "flash"
    else:
        kind = "auto"
    return f"{type(model).__name__.lower()}_{kind}"


def _target_path(output_path, model, quantize, kv_cache_max_len, prefix) -> Path:
    if output_path.suffix == ".tflite":
        return output_path
    suffix = QUANTIZE_SUFFIXES[quantize]
    prefix = prefix or default_name_prefix(model)
    return output_path / f"{prefix}_{suffix}_ekv{kv_cache_max_len}.tflite"


def _check_lengths(prefill_seq_lens, kv_cache_max_len) -> list:
    if isinstance(kv_cache_max_len, bool) or not isinstance(kv_cache_max_len, int):
        raise TypeError(f"kv_cache_max_len ({kv_cache_max_len!r}) must be an int")
    if kv_cache_max_len < 2:
        raise ValueError(f"kv_cache_max_len ({kv_cache_max_len}) must be >= 2")
    lengths = [prefill_seq_lens] if isinstance(prefill_seq_lens, int) else list(prefill_seq_lens)
    if not lengths:
        raise ValueError("prefill_seq_lens is empty; expected at least one length")
    for length in lengths:
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"prefill_seq_lens ({lengths}) must hold positive ints")
        if length > kv_cache_max_len:
            raise ValueError(
                f"prefill_seq_lens entry {length} exceeds kv_cache_max_len ({kv_cache_max_len})"
            )
    if len(set(lengths)) != len(lengths):
        raise ValueError(f"prefill_seq_lens ({lengths}) has duplicates")
    return sorted(lengths)


def _check_mask_cache(model, kv_cache_max_len: int, export_config) -> None:
    if export_config.mask_as_input:
        return
    mask_cache = getattr(model, "mask_cache", None)
    size = 0 if mask_cache is None else mask_cache.shape[-1]
    if size < kv_cache_max_len:
        raise ValueError(
            f"the model's mask cache has size {size} but kv_cache_max_len is"
            f" {kv_cache_max_len}; build the model with mask_cache_size={kv_cache_max_len}"
        )


class _Heartbeat:
    """Prints a start line, a line every 30 s while the block runs, and the time taken."""

    def __init__(self, what: str, enabled: bool):
        self.what, self.enabled = what, enabled
        self._done = threading.Event()

    def __enter__(self):
        self.started = time.perf_counter()
        if self.enabled:
            _say(f"{self.what} ...")
            threading.Thread(target=self._beat, daemon=True).start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._done.set()
        self.seconds = time.perf_counter() - self.started
        if self.enabled and exc_type is None:
            _say(f"{self.what}: done in {self.seconds:.1f} s")
        return False

    def _beat(self):
        while not self._done.wait(_HEARTBEAT_SECONDS):
            _say(f"{self.what}: still working ({time.perf_counter() - self.started:.0f} s)")


def _say(message: str) -> None:
    print(f"edge_flash.convert: {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    """The convert CLI's parser (both spellings of every flag; bad flags exit 2)."""
    parser = ArgumentParser(prog="python -m edge_flash.convert", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        choices=("tiny_llama", "smollm2", "auto"),
        default="auto",
        help="fixed architecture, or auto: any Llama-family config.json",
    )
    parser.add_argument(
        "--checkpoint_path",
        default=None,
        help="HF checkpoint directory (default: the shipped SmolLM2-135M-Instruct)",
    )
    parser.add_argument(
        "--use_flash_attention", nargs="?", const="true", default="false", type=str.lower,
        choices=("true", "false", "auto"),
        help="attention routing: true (the flag alone), false (default), or auto",
    )  # fmt: skip
    parser.add_argument("--prefill_seq_lens", type=int, nargs="+", default=[256],
                        help="one prefill signature per length (tokens)")  # fmt: skip
    parser.add_argument("--kv_cache_max_len", type=int, default=1024, help="KV cache slots")
    parser.add_argument(
        "--causal_mask", choices=("computed", "cache"), default="computed",
        help="computed from the positions in the graph (default), or litert-torch's"
        " constant kv_cache_max_len^2 mask cache stored in the file (edge_flash.causal_mask)",
    )  # fmt: skip
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none",
                        help="litert-torch quantization recipe")  # fmt: skip
    parser.add_argument("--output_path", default="reports/tflite", help="output directory")
    parser.add_argument("--output_name_prefix", default=None,
                        help="file name prefix (default: from the model and options)")  # fmt: skip
    parser.add_argument("--q_block_size", type=int, default=None, help="flash kernel option")
    parser.add_argument("--kv_block_size", type=int, default=None, help="flash kernel option")
    parser.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    return parser


def build_from_args(args) -> torch.nn.Module:
    """The model the CLI flags describe, attention routed as asked."""
    from edge_flash import builders, smollm, tiny_llama
    from edge_flash.causal_mask import use_computed_causal_mask

    choice = {"true": True, "false": False, "auto": "auto"}[args.use_flash_attention]
    options = {
        name: getattr(args, name)
        for name in ("q_block_size", "kv_block_size")
        if getattr(args, name) is not None
    }
    if options and choice is False:
        raise ValueError(f"kernel options {sorted(options)} need --use_flash_attention=true|auto")
    kv = args.kv_cache_max_len
    if args.model == "tiny_llama":
        if args.checkpoint_path is None:
            raise ValueError("--model tiny_llama needs --checkpoint_path (no TinyLlama is shipped)")
        model = tiny_llama.build_model(args.checkpoint_path, mask_cache_size=kv)
    elif args.model == "smollm2":
        model = smollm.build_model_v2(args.checkpoint_path, mask_cache_size=kv)
    else:
        path = args.checkpoint_path
        if path is None:
            from edge_flash.checkpoints import shipped_smollm2_checkpoint

            path = shipped_smollm2_checkpoint()
        model = builders.build_model(path, mask_cache_size=kv)
    if args.causal_mask == "computed":
        use_computed_causal_mask(model)
    return builders.apply_attention_choice(model, choice, **options)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the CLI; returns the exit status (0 written, 2 unusable input, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        with _Heartbeat("building the model", enabled=True):
            model = build_from_args(args)
        started = time.perf_counter()
        target = convert_to_tflite(
            model,
            Path(args.output_path),
            args.prefill_seq_lens,
            args.kv_cache_max_len,
            args.quantize,
            output_name_prefix=args.output_name_prefix,
        )
    except KeyboardInterrupt:
        print("edge_flash.convert: interrupted; no .tflite was written", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        if args.verbose:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"edge_flash.convert: error: {type(error).__name__}: {message}", file=sys.stderr)
        return EXIT_UNUSABLE
    seconds = time.perf_counter() - started
    print(f"wrote {target} in {seconds:.1f} s ({describe_tflite(target)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
