"""The model builder under test (``--model-builder=package.module:function``).

A model builder is a function ``(checkpoint_path: str, kv_cache_max_len: int)
-> torch.nn.Module`` that returns a litert-torch decoder (a ``DecoderOnlyModel``
or anything with its interface): forward ``(tokens, input_pos, kv_cache)``
giving a dict with ``logits`` and ``kv_cache``, a ``config`` (the
``ModelConfig`` its KV cache is made from) and ``transformer_blocks`` (the
per-layer diagnosis hooks them), with its mask cache built for
``kv_cache_max_len`` slots.

With a builder given, its model replaces the re-authored legs: ``reauthored_std``
is the model as built, ``reauthored_flash`` the same with the attention under
test routed in by ``edge_flash.use_attention``, and the TFLite legs are
converted from them. The float64 oracle and its rounding spread are always
built by the zoo's own builder (``parity.legs.build_reauthored``), so a bug in
the candidate builder shows against them.

``plain_builder`` is the builder the zoo uses for generic checkpoints, as a
user would write it; ``parity.injected_bugs`` has builders with one model bug
each (``build_with_kv_write_shift``, ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
from pathlib import Path
from typing import Callable

import torch

from parity.impl_loader import load_callable

MODEL_BUILDER_ENV = "PARITY_MODEL_BUILDER"
EXAMPLE_SPEC = "parity.model_builder:plain_builder"


class ModelBuilderError(ValueError):
    """The ``--model-builder`` spec cannot be loaded, or its model lacks the interface."""


def plain_builder(checkpoint_path: str, kv_cache_max_len: int) -> torch.nn.Module:
    """``edge_flash.build_model`` with standard attention and a mask cache of S slots."""
    import edge_flash

    return edge_flash.build_model(checkpoint_path, mask_cache_size=kv_cache_max_len)


@dataclasses.dataclass(frozen=True)
class ModelBuilder:
    """A loaded builder and the spec it came from."""

    spec: str
    fn: Callable

    def build(self, checkpoint_path: os.PathLike, kv_cache_max_len: int) -> torch.nn.Module:
        """The builder's model of a checkpoint, checked for the decoder interface.

        Raises:
          ModelBuilderError: the builder raised, or returned something without
            ``config``, ``transformer_blocks`` or a fp32 parameter.
        """
        try:
            model = self.fn(str(checkpoint_path), int(kv_cache_max_len))
        except Exception as error:  # noqa: BLE001 - the user's code; say whose it was
            raise ModelBuilderError(
                f"--model-builder ({self.spec!r}) raised {type(error).__name__} building"
                f" {checkpoint_path} with kv_cache_max_len={kv_cache_max_len}: {error}"
            ) from error
        _check_interface(model, self.spec)
        return model

    def source_hash(self) -> str:
        """Hash of the file defining the builder (TFLite cache keys go stale with it)."""
        try:
            return hashlib.sha256(Path(inspect.getsourcefile(self.fn)).read_bytes()).hexdigest()[:12]
        except (TypeError, OSError):
            return "no-source"


def model_builder_spec(option_value: str | None) -> str | None:
    """The spec to use: the option, else ``PARITY_MODEL_BUILDER``, else None (the zoo's)."""
    return option_value or os.environ.get(MODEL_BUILDER_ENV) or None


def load_model_builder(spec: str) -> ModelBuilder:
    """Imports ``package.module:function`` and checks it takes (checkpoint_path, kv_cache_max_len).

    Raises:
      ModelBuilderError: the spec does not resolve to a callable taking two arguments.
    """
    fn = load_callable(spec, "--model-builder", EXAMPLE_SPEC, ModelBuilderError)
    try:
        inspect.signature(fn).bind("checkpoint", 1)
    except TypeError as error:
        raise ModelBuilderError(
            f"--model-builder ({spec!r}) must take (checkpoint_path, kv_cache_max_len): {error}"
        ) from None
    except ValueError:
        pass  # no signature (a builtin or C callable): let the call itself decide
    return ModelBuilder(spec, fn)


def _check_interface(model: object, spec: str) -> None:
    if not isinstance(model, torch.nn.Module):
        raise ModelBuilderError(
            f"--model-builder ({spec!r}) returned a {type(model).__name__}, not a torch.nn.Module"
        )
    missing = [name for name in ("config", "transformer_blocks") if not hasattr(model, name)]
    if missing:
        raise ModelBuilderError(
            f"--model-builder ({spec!r}) returned a {type(model).__name__} without {missing}:"
            " return a litert-torch decoder (e.g. model_builder.DecoderOnlyModel)"
        )
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        raise ModelBuilderError(
            f"--model-builder ({spec!r}) returned parameters of dtypes {sorted(map(str, dtypes))};"
            " the legs under test are fp32"
        )
