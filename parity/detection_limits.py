"""Sensitivity next to specificity: the smallest attention error each leg's checks catch.

A perturbed leg is the leg's own model with its attention output (the kernel's
(B, T, N, H) result, before the output projection) changed in one layer, or in
every layer, by a relative drift ``out * (1 + d)`` or an additive bias
``out + b``. ``detection_limit`` bisects, in log space, between a size the
leg's checks (prefill and decode logits, KV cache; ``parity.checks``) pass and
one they fail, and returns both ends: the leg's detection limit lies between.

``python -m parity.detection_limits --model tiny-random-llama`` measures every
PyTorch leg under test (re-authored standard and flash) and writes result rows
(suite ``detection``) for the report; TFLite legs would need one conversion per
bisection step (minutes each) and are not bisected. Exit status: 0 measured,
2 unusable input (bad flag, unknown ``--model``, ``--steps`` below 1); it
judges nothing, so never 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable

import torch

from edge_flash.cli import ArgumentParser
from parity import checks
from parity import legs as L

KINDS = ("relative", "additive")
# Bisection range and steps: 1e-9 .. 1e-1 in 9 halvings of the log range leaves
# the limit known to a factor of 10 ** (8 / 512) ~ 1.04.
LOW, HIGH, STEPS = 1e-9, 1e-1, 9


@dataclasses.dataclass(frozen=True)
class Perturbation:
    """``out * (1 + size)`` (relative) or ``out + size`` (additive) in ``layers`` (None: all)."""

    kind: str
    size: float
    layers: tuple[int, ...] | None = None

    def wrap(self, fn: Callable) -> Callable:
        def perturbed(q, k, v, head_size, **kwargs):
            out = fn(q, k, v, head_size, **kwargs)
            return out * (1 + self.size) if self.kind == "relative" else out + self.size

        return perturbed


def _base_function(leg: str, attention_impl: Callable) -> Callable:
    from litert_torch.generative.layers.scaled_dot_product_attention import (
        scaled_dot_product_attention,
    )

    return attention_impl if leg == L.FLASH else scaled_dot_product_attention


def perturbed_chain(chain, leg: str, perturbation: Perturbation):
    """A chain whose ``leg`` (re-authored standard or flash) carries ``perturbation``."""
    from parity.chain import Chain

    if leg not in (L.STD, L.FLASH):
        raise ValueError(f"leg ({leg!r}) must be {L.STD!r} or {L.FLASH!r}")
    prepared = chain.prepared
    zoo = prepared.zoo
    base = _base_function(leg, chain.attention_impl)
    options = L.accepted_options(base, zoo.kernel_options) if leg == L.FLASH else {}

    def factory():
        model = L.build_reauthored(
            prepared.checkpoint, zoo.builder, zoo.kv_cache_max_len, zoo.family
        )
        blocks = model.transformer_blocks
        chosen = range(len(blocks)) if perturbation.layers is None else perturbation.layers
        for index in chosen:
            L.route_attention(blocks[index], perturbation.wrap(base), options)
        return L.ReauthoredLeg(model, zoo.kv_cache_max_len, leg)

    return Chain(prepared, chain.attention_impl, None, {leg: factory}, reuse=chain)


def leg_fails(chain, leg: str) -> bool:
    """Whether any logit or KV-cache check of ``leg`` fails on any prompt of ``chain``."""
    for prompt in chain.prepared.prompt_ids:
        runs = chain.runs(prompt, [leg])
        common = dict(spread=chain.spread(prompt), case_id=f"detection-{prompt}",
                      model=chain.prepared.zoo.name, record=lambda **row: None)  # fmt: skip
        try:
            checks.check_logits(runs, leg, "prefill", **common)
            checks.check_logits(runs, leg, "decode", **common)
            checks.check_kv_cache(runs, leg, **common)
        except AssertionError:
            return True
    return False


def detection_limit(chain, leg: str, kind: str, layers=None, steps: int = STEPS) -> tuple:
    """(largest size that passed, smallest that failed) of ``kind`` in ``layers``.

    Raises:
      ValueError: unknown kind, or the range ends do not pass / fail as they must.
    """
    if kind not in KINDS:
        raise ValueError(f"kind ({kind!r}) must be one of {KINDS}")

    def fails(size: float) -> bool:
        return leg_fails(perturbed_chain(chain, leg, Perturbation(kind, size, layers)), leg)

    low, high = LOW, HIGH
    if fails(low) or not fails(high):
        raise ValueError(f"{leg}: {kind} {low:g} must pass and {high:g} must fail to bisect")
    for _ in range(steps):
        middle = math.sqrt(low * high)
        low, high = (low, middle) if fails(middle) else (middle, high)
    return low, high


def measure(chain, legs=(L.STD, L.FLASH), record=None, say=print, steps: int = STEPS) -> list:
    """Detection limits of ``legs``: every layer and the middle layer, both kinds.

    Returns rows ``(leg, where, kind, passed_at, failed_at)``; ``record`` (the
    ``record_result`` fields) gets one row each.
    """
    blocks = L.build_reauthored(
        chain.prepared.checkpoint,
        chain.prepared.zoo.builder,
        chain.prepared.zoo.kv_cache_max_len,
        chain.prepared.zoo.family,
    ).transformer_blocks
    middle = len(blocks) // 2
    rows = []
    for leg in legs:
        for where, layers in (("every layer", None), (f"layer {middle}", (middle,))):
            for kind in KINDS:
                passed_at, failed_at = detection_limit(chain, leg, kind, layers, steps)
                rows.append((leg, where, kind, passed_at, failed_at))
                say(f"{chain.prepared.zoo.name} {leg} {kind} in {where}: passes at"
                    f" {passed_at:.3g}, fails at {failed_at:.3g}")  # fmt: skip
                if record is not None:
                    record(suite="detection", case_id=f"{chain.prepared.zoo.name}-{leg}",
                           model=chain.prepared.zoo.name, legs=f"{leg}-vs-{L.ORACLE}",
                           metric=f"detection_limit_{kind}", value=failed_at,
                           tolerance=passed_at, passed=True,
                           details=f"attention output {kind} in {where}: passes at"
                           f" {passed_at:.3g}, fails at {failed_at:.3g}")  # fmt: skip
    return rows


def build_parser() -> argparse.ArgumentParser:
    """The detection_limits CLI's parser (both spellings of every flag; bad flags exit 2)."""
    from parity.zoo import ZOO

    parser = ArgumentParser(prog="python -m parity.detection_limits", description=main.__doc__)
    parser.add_argument("--model", default="tiny-random-llama", choices=[m.name for m in ZOO],
                        help="zoo model (default: tiny-random-llama)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=STEPS, help="bisection steps")
    parser.add_argument("--results", default=None, help="append result rows to this file")
    parser.add_argument("--legs", nargs="+", default=[L.STD, L.FLASH], choices=[L.STD, L.FLASH],
                        help="PyTorch legs to bisect (default: both)")  # fmt: skip
    return parser


def main(argv=None) -> int:
    """Prints (and with --results, records) the detection limits of a zoo model's legs."""
    import os
    import tempfile
    from pathlib import Path

    import edge_flash
    from parity.chain import Chain
    from parity.zoo import prepare, zoo_model

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps ({args.steps}) must be >= 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    writer = None
    if args.results:
        from parity.results import ResultRow, ResultsWriter

        writer = ResultsWriter(args.results)
    with tempfile.TemporaryDirectory(prefix="parity-detection-") as work:
        chain = Chain(prepare(zoo_model(args.model), Path(work)), edge_flash.flash_attention)
        record = None
        if writer is not None:

            def record(**fields):
                writer.record(ResultRow(test="parity.detection_limits", **fields))

        measure(chain, legs=tuple(args.legs), record=record, steps=args.steps)
    if writer is not None:
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
