"""Cached conversion of benchmark modules to .tflite files.

Converting flash attention unrolls its block loops into the graph, so a file
costs from seconds (T = 512) to minutes (T = 8192). Files are cached under
``PARITY_BENCH_CACHE`` (default ``.cache/bench``), named by case and keyed by
everything that changes the graph: shape, lengths, block sizes, the source of
the kernel and the versions of torch and litert-torch. Conversion runs in a
child process (``parity.bench._convert_child``) so this module needs no torch.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from parity.bench.cases import BenchCase

CACHE_ENV = "PARITY_BENCH_CACHE"
DEFAULT_CACHE_DIR = Path(".cache") / "bench"
# Files whose source shapes the converted attention graph.
_KERNEL_FILES = ("kernel.py", "validation.py")


class ConversionError(RuntimeError):
    """A conversion child failed; the message carries the last lines of its output."""


def cache_dir() -> Path:
    """The cache directory (``PARITY_BENCH_CACHE`` or ``.cache/bench``)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


@functools.cache  # once per run: a prefill and its decode share one file
def package_digest(package: str, files: tuple[str, ...] | None = None) -> str:
    """sha256 of a package's sources (``files``, default every .py), without importing it."""
    spec = importlib.util.find_spec(package)
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    paths = [package_dir / name for name in files] if files else sorted(package_dir.glob("*.py"))
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def stack_versions() -> dict:
    """Versions of the packages that shape a converted graph."""
    return {name: metadata.version(name) for name in ("torch", "litert-torch")}


def cache_key(case: BenchCase) -> str:
    """A short hash of everything that determines the converted graph of ``case``."""
    case = dataclasses.replace(case, xnnpack=True)  # a runtime setting: the same file
    fields = {
        "case": {**case.to_dict(), "runtime": "litert"},
        "kernel": package_digest("edge_flash", _KERNEL_FILES) if case.impl == "flash" else "",
        "versions": stack_versions(),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def cached_model_path(case: BenchCase, directory: Path | None = None) -> Path:
    """Where the converted file of ``case`` lives in the cache (it may not exist yet)."""
    directory = cache_dir() if directory is None else Path(directory)
    case = dataclasses.replace(case, xnnpack=True)  # a runtime setting: the same file
    stem = f"{case.target}-{case.impl_label}-t{case.seq_q}-s{case.seq_kv}-{case.shape.tag()}"
    return directory / f"{stem}-{cache_key(case)}.tflite"


def ensure_converted(
    case: BenchCase, directory: Path | None = None, timeout_s: float = 3600.0
) -> tuple[Path, dict]:
    """Returns (path, info): the cached .tflite of ``case``, converting it first if missing.

    ``info`` has ``cached`` (bool) and, after a conversion, ``seconds`` and ``bytes``.

    Raises:
      ConversionError: the child failed or timed out.
    """
    path = cached_model_path(case, directory)
    if path.exists():
        return path, {"cached": True, "bytes": path.stat().st_size}
    path.parent.mkdir(parents=True, exist_ok=True)
    args = [json.dumps(case.to_dict()), str(path)]
    return path, run_convert_child("parity.bench._convert_child", args, case.case_id, timeout_s)


def run_convert_child(module: str, args: list[str], label: str, timeout_s: float = 3600.0) -> dict:
    """Runs a conversion child; returns its JSON line plus ``cached`` and ``wall_seconds``.

    Raises:
      ConversionError: the child failed or timed out.
    """
    command = [sys.executable, "-m", module, *args]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise ConversionError(f"converting {label} took over {timeout_s:.0f} s") from None
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise ConversionError(f"converting {label} failed ({done.returncode}): {tail}")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    return {"cached": False, "wall_seconds": time.perf_counter() - start, **info}
