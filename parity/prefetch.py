"""Converts a session's TFLite files ahead of its tests, in a second process.

A serial gate spends about 40% of its time in litert-torch conversions, which
run on one core while the other waits (torch.export and lowering are Python,
one thread). A session that will run TFLite legs therefore starts one
background process (``python -m parity.prefetch``) that converts, in the order
the collected tests first need them, every (model, variant, recipe) file those
tests read, into the session's ``TFLiteStore`` directory. The store's lock per
file (``parity.file_lock``) makes the test process wait for a file the
prefetcher is converting, and convert one itself if it gets there first; the
prefetcher then finds it and moves on. The key of each file is its content
(``TFLiteStore._key``), so a file is the same whichever process wrote it.

The prefetcher is only a head start: if it fails or is killed, the tests convert
what they need themselves. Its progress goes to ``prefetch.log`` in the store
directory. ``PARITY_PREFETCH=0`` turns it off; it is off in pytest-xdist
sessions (the workers already convert in parallel) and in sessions that run no
TFLite leg.

``python -m parity.prefetch --cache DIR --conversions model:variant:recipe ...``;
exit status 0 when every file is there, 1 when a conversion failed (the tests
that need it convert it again and report the error), 2 for unusable arguments.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

PREFETCH_ENV = "PARITY_PREFETCH"
LOG_NAME = "prefetch.log"
# How long a terminated prefetcher gets to remove its half-made scratch files.
STOP_GRACE_SECONDS = 10.0

Conversion = tuple[str, str, str]  # (zoo model name, "std" | "flash", recipe)


def enabled(environ=None) -> bool:
    """Whether ``PARITY_PREFETCH`` allows a prefetcher (unset or anything but 0/false/no)."""
    value = (os.environ if environ is None else environ).get(PREFETCH_ENV, "1")
    return value.strip().lower() not in ("0", "false", "no", "off")


def leg_conversion(leg: str) -> tuple[str, str] | None:
    """The (variant, recipe) file the TFLite leg ``leg`` runs, or None for a PyTorch leg."""
    from parity import legs as L

    if leg in L.QUANTIZED_OF:
        return L.QUANTIZED_OF[leg]
    base = L.base_leg(leg)
    return {L.TFLITE_STD: ("std", "none"), L.TFLITE_FLASH: ("flash", "none")}.get(base)


def wanted_conversions(items: Iterable, skip: Iterable[Conversion] = ()) -> list[Conversion]:
    """The conversions the chain cases among ``items`` read, in the order they first do.

    An item counts when its ``case`` parameter is a ``parity.cases.ChainCase``
    of a TFLite leg and it carries no ``skip`` mark. ``skip`` lists files the
    session does not convert (the ``--tflite`` file's leg).
    """
    from parity.cases import ChainCase

    wanted: dict[Conversion, None] = {}
    excluded = set(skip)
    for item in items:
        case = getattr(getattr(item, "callspec", None), "params", {}).get("case")
        if not isinstance(case, ChainCase) or item.get_closest_marker("skip"):
            continue
        file = leg_conversion(case.leg)
        if file is not None and (case.model.name, *file) not in excluded:
            wanted[(case.model.name, *file)] = None
    return list(wanted)


def start(
    directory: Path,
    conversions: Sequence[Conversion],
    attention_impl_spec: str,
    model_builder_spec: str | None,
    checkpoint: Path | None,
) -> subprocess.Popen:
    """Starts the prefetcher on ``conversions`` into ``directory``; its output goes to
    ``<directory>/prefetch.log``. The caller stops it with ``stop``."""
    command = [sys.executable, "-m", "parity.prefetch", "--cache", str(directory),
               "--attention-impl", attention_impl_spec, "--conversions",
               *(":".join(c) for c in conversions)]  # fmt: skip
    if model_builder_spec:
        command += ["--model-builder", model_builder_spec]
    if checkpoint is not None:
        command += ["--checkpoint_path", str(checkpoint)]
    # The session's import path (pytest puts rootdirs and conftest folders on it), so
    # a plug-in kernel or builder the session imports, the prefetcher imports too.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    log = (Path(directory) / LOG_NAME).open("a", encoding="utf-8")
    with log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)  # fmt: skip


def stop(process: subprocess.Popen) -> None:
    """Ends the prefetcher: SIGTERM (it removes its scratch files), SIGKILL after a grace."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _parse_conversion(text: str) -> Conversion:
    from edge_flash.convert import QUANTIZE_CHOICES

    parts = text.split(":")
    if len(parts) != 3 or parts[1] not in ("std", "flash") or parts[2] not in QUANTIZE_CHOICES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not model:variant:recipe (variant std or flash, recipe one of"
            f" {', '.join(QUANTIZE_CHOICES)}), e.g. tiny-random-llama:flash:none"
        )
    return parts[0], parts[1], parts[2]


def build_parser() -> argparse.ArgumentParser:
    from edge_flash.cli import ArgumentParser

    parser = ArgumentParser(prog="python -m parity.prefetch", description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, required=True, help="the TFLiteStore directory")
    parser.add_argument(
        "--conversions",
        nargs="+",
        type=_parse_conversion,
        required=True,
        metavar="MODEL:VARIANT:RECIPE",
        help="files to convert, in order",
    )
    parser.add_argument(
        "--attention-impl",
        default="edge_flash:flash_attention",
        help="the flash legs' attention function, package.module:function",
    )
    parser.add_argument("--model-builder", default=None, help="the re-authored legs' builder")
    parser.add_argument("--checkpoint_path", type=Path, default=None,
                        help="the user-checkpoint zoo entry's checkpoint")  # fmt: skip
    return parser


def _store(args):
    from parity.chain import TFLiteStore
    from parity.impl_loader import load_attention_impl
    from parity.model_builder import load_model_builder

    builder = load_model_builder(args.model_builder) if args.model_builder else None
    impl = load_attention_impl(args.attention_impl)
    return TFLiteStore(args.cache, impl, args.attention_impl, builder)


_NOW: dict = {}  # "target": the file being converted, "work_dir": the checkpoints


def _exit_now(signum, frame):
    """SIGTERM: removes the scratch directory of the file being converted and the
    checkpoints, then exits 128 + signum at once. Not by raising SystemExit for
    ``convert_to_tflite``'s cleanup to catch: raised inside a ``__del__`` or a
    callback that ignores exceptions it is lost and the conversion runs on
    (seen once: the conversion ran to its end after SIGTERM)."""
    target = _NOW.get("target")
    if target is not None:
        for scratch in target.parent.glob(f".{target.stem}-*"):
            shutil.rmtree(scratch, ignore_errors=True)
    if _NOW.get("work_dir") is not None:
        shutil.rmtree(_NOW["work_dir"], ignore_errors=True)
    os._exit(128 + signum)  # the lock on the target goes with the process


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (module docstring); returns the exit status."""
    args = build_parser().parse_args(argv)
    # Its own checkpoints (the random ones are rewritten from their seeds, the same
    # bytes as the tests'), never a directory another process may be writing.
    args.work_dir = _NOW["work_dir"] = Path(tempfile.mkdtemp(prefix="parity-prefetch-"))
    signal.signal(signal.SIGTERM, _exit_now)
    try:
        return _prefetch(args)
    finally:
        shutil.rmtree(args.work_dir, ignore_errors=True)


def _prefetch(args) -> int:
    """Converts ``args.conversions`` in order, deferring each busy one once; 1 if one failed."""
    store = _store(args)
    queue = list(args.conversions)
    deferred: set[Conversion] = set()
    done = failed = 0
    while queue:
        conversion = queue.pop(0)
        started = time.perf_counter()
        try:
            # A file another process is converting now (the tests got there first) is
            # left to it: come back to it after the rest, instead of waiting idle.
            if conversion not in deferred and _being_converted(store, args, conversion):
                deferred.add(conversion)
                queue.append(conversion)
                continue
            how = _convert(store, args, conversion)
        # Any error: the prefetcher is only a head start, and the test that needs
        # this file converts it again and reports the error where it is read.
        except Exception as error:  # noqa: BLE001
            failed += 1
            how = f"failed: {type(error).__name__}: {error}"
        done += 1
        print(f"[{done}/{len(args.conversions)}] {' '.join(conversion)}: {how}"
              f" ({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    return 1 if failed else 0


_PREPARED: dict = {}  # zoo model name -> its PreparedModel, this process


def _prepared(args, name: str):
    from parity import zoo

    if name not in _PREPARED:
        model = zoo.zoo_model(name)
        _PREPARED[name] = zoo.prepare(model, args.work_dir, args.checkpoint_path)
    return _PREPARED[name]


def _being_converted(store, args, conversion: Conversion) -> bool:
    from parity.file_lock import is_held

    name, variant, recipe = conversion
    return is_held(store.lock_path(store.target(_prepared(args, name), variant, recipe)))


def _convert(store, args, conversion: Conversion) -> str:
    name, variant, recipe = conversion
    prepared = _prepared(args, name)
    _NOW["target"] = store.target(prepared, variant, recipe)
    path = store.path(prepared, variant, recipe)
    return f"{path.name} converted" if path.name in store.conversions else f"{path.name} there"


if __name__ == "__main__":
    sys.exit(main())
