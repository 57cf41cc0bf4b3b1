"""Error spreads kept on disk, keyed by everything that determines them.

``parity.error_spread.measure_spread`` reruns the float64 oracle eight times
under Monte Carlo rounding noise: on SmolLM2 about a minute per prompt, the
longest single step of a gate whose conversions are cached. The result is a
deterministic function of its inputs (the noise comes from a seeded generator
through ``torch.rand``, bit-identical on every CPU), so it is kept like a
converted model: one small file per key, reused while the key holds.

The key holds the oracle run itself (prompt, fed tokens and the bytes of every
tensor the deviations are taken from: any change to the oracle's model, code or
arithmetic changes them), the checkpoint's hash, the zoo entry's builder, family
and cache length, the measurement's arguments, the sources of the modules that
compute a spread and of ``edge_flash`` (which builds the oracle's model), and
the versions of torch, litert-torch and transformers. A file that does not load
is measured again and replaced. Files land by rename, never half-written.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import tempfile
from pathlib import Path

import torch

from parity.error_spread import OracleSpread, Spread

# The parity modules a spread's value depends on, beside the oracle run's tensors.
SPREAD_SOURCES = ("error_spread.py", "rounding_noise.py", "fp64_model.py", "legs.py")
SPREAD_PACKAGES = ("torch", "litert-torch", "transformers")
_PARTS = ("prefill_logits", "step_logits", "kv", "hidden")


def spread_key(oracle_run, identity: str, **arguments) -> str:
    """The 16-hex key of the spread measured on ``oracle_run`` (a ``parity.legs.LegRun``).

    ``identity`` names the oracle's model (checkpoint hash, builder, family, ...);
    ``arguments`` are ``measure_spread``'s other arguments (z, samples, seed, ...).
    """
    digest = hashlib.sha256()
    digest.update(f"{identity} {sorted(arguments.items())} {_code_identity()}".encode())
    digest.update(repr((oracle_run.prompt_ids, oracle_run.fed)).encode())
    for tensor in (oracle_run.prefill_logits, oracle_run.step_logits, oracle_run.kv,
                   oracle_run.hidden):  # fmt: skip
        if tensor is None:
            digest.update(b"none")
        else:
            digest.update(f"{tuple(tensor.shape)} {tensor.dtype}".encode())
            digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


@functools.cache
def _code_identity() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from parity.chain import _sources_hash

    digest = hashlib.sha256(_sources_hash().encode())
    for name in SPREAD_SOURCES:
        digest.update((Path(__file__).parent / name).read_bytes())
    for package in SPREAD_PACKAGES:
        try:
            digest.update(f"{package}={version(package)}".encode())
        except PackageNotFoundError:
            digest.update(f"{package}=absent".encode())
    return digest.hexdigest()[:16]


def load_spread(path: Path) -> OracleSpread | None:
    """The spread kept at ``path``, or None if there is none or it does not load."""
    try:
        stored = torch.load(path, weights_only=True)
        parts = {name: Spread(**stored[name]) for name in _PARTS}
        return OracleSpread(**parts, samples=int(stored["samples"]))
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - a damaged or outdated file is measured again
        return None


def save_spread(path: Path, spread: OracleSpread) -> None:
    """Writes ``spread`` to ``path`` by rename (readers see the old file or the whole new one)."""
    stored = {name: dataclasses.asdict(getattr(spread, name)) for name in _PARTS}
    stored["samples"] = spread.samples
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    os.close(handle)
    try:
        torch.save(stored, scratch)
        os.replace(scratch, path)
    finally:
        Path(scratch).unlink(missing_ok=True)
