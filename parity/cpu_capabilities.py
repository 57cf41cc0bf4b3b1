"""The CPU kernel paths torch can be forced onto, and running Python code under each.

torch picks its vectorised CPU kernels at start-up by CPU capability, and
``ATEN_CPU_CAPABILITY`` forces a narrower one (``default``, ``avx2``,
``avx512`` on x86). Kernels of different widths may round differently (e.g.
``torch.randn``), so values that must be the same on every machine are checked
by computing them in child processes forced onto each path this CPU has: one
machine then stands in for older and newer ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

CAPABILITY_ENV = "ATEN_CPU_CAPABILITY"
_REPO_ROOT = Path(__file__).resolve().parents[1]
# /proc/cpuinfo flags torch needs for each forced x86 path (ATen's DispatchStub
# checks AVX512 F/BW/DQ/VL; AVX2 kernels are compiled with FMA).
_X86_PATHS = {"avx2": ("avx2", "fma"), "avx512": ("avx512f", "avx512bw", "avx512dq", "avx512vl")}
# Children print progress and warnings; only this much of stderr goes into an error.
_STDERR_TAIL = 2000


def cpu_capabilities(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, ...]:
    """``ATEN_CPU_CAPABILITY`` values this CPU runs, narrowest first.

    "default" (scalar-width kernels, every CPU), then "avx2" and "avx512" when
    /proc/cpuinfo has their flags, then torch's own choice for this machine if
    it is none of these (e.g. "sve256" on ARM with SVE).
    """
    import torch

    try:
        flags = set(cpuinfo.read_text(encoding="utf-8", errors="replace").split())
    except OSError:  # no /proc (macOS): only the default and the native path
        flags = set()
    names = ["default"]
    names += [name for name, needed in _X86_PATHS.items() if flags.issuperset(needed)]
    native = torch.backends.cpu.get_cpu_capability().lower()
    return tuple(names) if native in names else (*names, native)


def run_under_capability(
    code: str, capability: str, args: Sequence[str] = (), timeout: float = 300
) -> dict:
    """Runs ``python -c code *args`` with torch forced onto ``capability``; returns its JSON.

    The child must print one JSON object as its last stdout line. It runs from
    the repository root, so it imports this checkout.

    Raises:
      RuntimeError: the child exited non-zero, printed no JSON, or torch in it
        reports a capability other than the one asked for.
    """
    env = dict(os.environ, **{CAPABILITY_ENV: capability})
    probe = "import torch as _t; print('capability:', _t.backends.cpu.get_cpu_capability())\n"
    completed = subprocess.run(
        [sys.executable, "-c", probe + code, *args],
        env=env,
        cwd=_REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    label = f"child under {CAPABILITY_ENV}={capability}"
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or len(lines) < 2:
        raise RuntimeError(
            f"{label} exited with {completed.returncode}; stderr ends:\n"
            f"{completed.stderr[-_STDERR_TAIL:]}"
        )
    reported = lines[0].removeprefix("capability:").strip().lower()
    if reported != capability:
        raise RuntimeError(f"{label}: torch reports capability {reported!r}, not {capability!r}")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as error:
        raise RuntimeError(f"{label}: last stdout line is not JSON: {lines[-1]!r}") from error
