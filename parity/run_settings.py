"""Settings that change rounding but not correctness, read from the environment.

The false-alarm study (``parity.false_alarms``) runs the suites in child
processes under each setting; these variables carry the setting to the legs:

- ``ATEN_CPU_CAPABILITY`` (torch's own): the CPU kernels PyTorch dispatches to
  (``default``, ``avx2``, ``avx512``); read by torch at import.
- ``PARITY_TORCH_THREADS``: torch's intra-op threads (``torch.set_num_threads``).
- ``PARITY_LITERT_THREADS``: LiteRT interpreter threads (default: LiteRT's own).
- ``PARITY_LITERT_XNNPACK``: ``0`` runs LiteRT's builtin kernels instead of the
  XNNPACK delegate (default ``1``).
- ``PARITY_PROMPT_SEED``: added to the seed of every random token-id prompt
  (default 0, the prompts the golden files hold).

Bad values raise ``ValueError`` naming the variable and its value.
"""

from __future__ import annotations

import dataclasses
import os

TORCH_THREADS_ENV = "PARITY_TORCH_THREADS"
LITERT_THREADS_ENV = "PARITY_LITERT_THREADS"
LITERT_XNNPACK_ENV = "PARITY_LITERT_XNNPACK"
PROMPT_SEED_ENV = "PARITY_PROMPT_SEED"


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The rounding-relevant settings of this process (None: the library's default)."""

    torch_threads: int | None
    litert_threads: int | None
    litert_xnnpack: bool
    prompt_seed: int

    def describe(self) -> str:
        """e.g. ``cpu=AVX512 torch_threads=2 litert=xnnpack/default-threads prompt_seed=0``."""
        import torch

        litert = "xnnpack" if self.litert_xnnpack else "builtin"
        threads = self.litert_threads or "default"
        return (
            f"cpu={torch.backends.cpu.get_cpu_capability()}"
            f" torch_threads={torch.get_num_threads()} litert={litert}/{threads}-threads"
            f" prompt_seed={self.prompt_seed}"
        )


def _int_env(name: str, minimum: int) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ValueError(f"{name} ({value!r}) must be an integer >= {minimum}")
    return number


def current() -> RunSettings:
    """The settings of this process, from the environment (see the module docstring).

    Raises:
      ValueError: a variable holds a bad value.
    """
    xnnpack = os.environ.get(LITERT_XNNPACK_ENV, "1").strip()
    if xnnpack not in ("0", "1"):
        raise ValueError(f"{LITERT_XNNPACK_ENV} ({xnnpack!r}) must be 0 or 1")
    return RunSettings(
        torch_threads=_int_env(TORCH_THREADS_ENV, 1),
        litert_threads=_int_env(LITERT_THREADS_ENV, 1),
        litert_xnnpack=xnnpack == "1",
        prompt_seed=_int_env(PROMPT_SEED_ENV, 0) or 0,
    )


def apply_torch_threads() -> None:
    """Sets torch's thread count from ``PARITY_TORCH_THREADS`` when given."""
    import torch

    threads = current().torch_threads
    if threads is not None:
        torch.set_num_threads(threads)
