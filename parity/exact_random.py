"""Integer-exact random numbers: seeded fixtures that are the same bytes on every CPU.

``torch.randn`` is not: its Box-Muller transform calls ``log``/``cos`` through
whichever vectorised kernel the CPU selects, so the last bits of the same
seeded draw differ between ``ATEN_CPU_CAPABILITY=default``, ``avx2`` and
``avx512`` on one machine (measured: 1000 draws of seed 0 hash differently
under default and avx2), and random checkpoints and their golden files with
them. Everything here is computed from integers instead:

- the bits come from ``numpy.random.Generator(numpy.random.PCG64(seed))``
  through ``Generator.integers`` only. PCG64 (and the SeedSequence that seeds
  it) is integer arithmetic, and so is ``integers`` (Lemire's bounded method);
  numpy's own list of what breaks cross-machine reproducibility is floating
  point and linked libraries, neither of which this path touches. A numpy
  release that changed the ``integers`` algorithm would still change the
  stream: ``parity/test_exact_random.py`` stores the first values to notice.
- ``normal`` is Irwin-Hall: the sum of 12 independent uniform integers
  ``U_i`` in ``[0, 2**20)``, minus ``6 * 2**20``, divided by ``2**20``. Each
  ``U_i / 2**20`` is (up to a 2**-20 grid) uniform on [0, 1) with mean 1/2 and
  variance 1/12, so the sum of 12 has mean 6 and variance 12 * 1/12 = 1, and
  subtracting 6 gives mean 0, variance 1 and a near-normal shape (central
  limit theorem). The discrete grid shifts this by nothing that matters: mean
  -6 * 2**-20 (about -6e-6), variance 1 - 2**-40. Tails are bounded at +-6
  (|z| > 6 is about 1 in 5e8 for a true normal): harmless for weights and
  attention inputs. The sum is below ``12 * 2**20 < 2**24``, so it and its
  difference from ``6 * 2**20`` are exact in float32, and dividing by a power
  of two is exact: no rounding, no libm, no transcendental, anywhere.
- ``uniform`` is an integer in ``[0, 2**24)`` divided by ``2**24``: exact in
  float32 (the 24-bit grid ``torch.rand`` also uses).

Scaling is the caller's: ``std * normal(...)`` and ``mean + ...`` are single
IEEE 754 multiplications and additions, correctly rounded on every machine.
The std itself must be too: write ``1 / math.sqrt(fan_in)``, not
``fan_in ** -0.5``. Square root and division are correctly rounded by IEEE 754
everywhere; ``**`` on floats goes through libm ``pow``, which is not required
to be and may differ in the last bit between platforms.

Pure numerics: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

# 20 bits per uniform: 12 of them sum below 12 * 2**20 < 2**24, float32's exact range.
_NORMAL_BITS = 20
_NORMAL_TERMS = 12  # Irwin-Hall with 12 terms has variance 12 * (1/12) = 1.
# 24 bits per uniform: float32's significand, so k / 2**24 is exact.
_UNIFORM_BITS = 24
# Values drawn per numpy call: bounds the (chunk, 12) int32 buffer to 768 KiB,
# which keeps it in cache (measured 0.37 s per 1e7 normals, against 1.5 s for
# one whole-array call). The chunk size does not change the values (see normal).
_CHUNK = 1 << 14


class ExactGenerator:
    """A seeded stream of platform-independent random numbers (pass one object around).

    Draws advance the stream like a ``torch.Generator``: the same seed and the
    same sequence of calls give the same bytes on every machine.
    """

    def __init__(self, seed: int):
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed ({seed!r}) must be a non-negative int")
        self.seed = seed
        self.bits = np.random.Generator(np.random.PCG64(seed))

    def __repr__(self) -> str:
        return f"ExactGenerator(seed={self.seed})"


def exact_generator(seed: int) -> ExactGenerator:
    """A fresh ``ExactGenerator`` seeded with ``seed`` (a non-negative int)."""
    return ExactGenerator(seed)


def normal(shape: Sequence[int], generator: ExactGenerator) -> torch.Tensor:
    """Approximately N(0, 1) float32 values of ``shape``, exact on every machine.

    Irwin-Hall with 12 terms of 20 bits (module docstring): values are
    multiples of 2**-20 in [-6, 6). The stream is consumed 12 integers per
    value in row-major order, so the first k values of a draw do not depend on
    how many were drawn.

    Raises:
      TypeError: ``generator`` is not an ``ExactGenerator``.
      ValueError: ``shape`` has an entry that is not a non-negative int.
    """
    shape = _checked_shape(shape)
    count = math.prod(shape)
    _check_generator(generator)
    sums = np.empty(count, dtype=np.int32)
    for start in range(0, count, _CHUNK):
        rows = min(_CHUNK, count - start)
        terms = generator.bits.integers(
            0, 1 << _NORMAL_BITS, size=(rows, _NORMAL_TERMS), dtype=np.int32
        )  # (rows, 12): value i takes the stream's integers 12 i .. 12 i + 11
        # Column by column: a reduction over axis 1 measured 1.7x slower (0.63 s per 1e7).
        total = terms[:, 0].copy()
        for column in range(1, _NORMAL_TERMS):
            total += terms[:, column]
        sums[start : start + rows] = total
    centred = sums - np.int32((_NORMAL_TERMS // 2) << _NORMAL_BITS)  # |x| <= 6 * 2**20
    values = centred.astype(np.float32) * np.float32(2.0**-_NORMAL_BITS)  # both exact
    return torch.from_numpy(values).reshape(shape)


def uniform(shape: Sequence[int], generator: ExactGenerator) -> torch.Tensor:
    """Uniform float32 values on [0, 1) of ``shape``: multiples of 2**-24, exact everywhere.

    Raises:
      TypeError: ``generator`` is not an ``ExactGenerator``.
      ValueError: ``shape`` has an entry that is not a non-negative int.
    """
    shape = _checked_shape(shape)
    _check_generator(generator)
    draws = generator.bits.integers(0, 1 << _UNIFORM_BITS, size=math.prod(shape), dtype=np.int32)
    values = draws.astype(np.float32) * np.float32(2.0**-_UNIFORM_BITS)  # both exact
    return torch.from_numpy(values).reshape(shape)


def integers(low: int, high: int, size: int, generator: ExactGenerator) -> list[int]:
    """``size`` uniform integers in ``[low, high)`` (numpy ``Generator.integers``), as Python ints.

    Raises:
      TypeError: ``generator`` is not an ``ExactGenerator``.
      ValueError: ``low``/``high``/``size`` are not ints, ``low >= high`` or ``size < 0``.
    """
    for name, value in (("low", low), ("high", high), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} ({value!r}) must be an int")
    if low >= high:
        raise ValueError(f"low ({low}) must be less than high ({high})")
    if size < 0:
        raise ValueError(f"size ({size}) must be a non-negative int")
    _check_generator(generator)
    return [int(i) for i in generator.bits.integers(low, high, size=size, dtype=np.int64)]


def _checked_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` as a tuple of ints (a torch.Size is fine); raises ValueError otherwise."""
    if isinstance(shape, int):
        shape = (shape,)
    dims = tuple(shape)
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in dims):
        raise ValueError(f"shape ({shape!r}) must be a sequence of non-negative ints")
    return dims


def _check_generator(generator) -> None:
    if not isinstance(generator, ExactGenerator):
        raise TypeError(
            f"generator ({generator!r}) must be an ExactGenerator (parity.exact_random"
            f".exact_generator(seed)), not a {type(generator).__name__}"
        )
