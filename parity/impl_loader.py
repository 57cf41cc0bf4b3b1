"""Resolves an ``--attention-impl`` spec (``package.module:function``) to a callable.

The property and parity suites run against any function with the contract of
``edge_flash.flash_attention``; this module turns the user's spec into that
function or into one clear error.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Mapping
from typing import Callable

DEFAULT_ATTENTION_IMPL = "edge_flash:flash_attention"
ATTENTION_IMPL_ENV = "EDGE_FLASH_ATTENTION_IMPL"


class AttentionImplError(ValueError):
    """The ``--attention-impl`` spec cannot be resolved to a callable."""


def attention_impl_spec(option_value: str | None) -> str:
    """Returns the spec to use: the option, else the environment variable, else the default."""
    return option_value or os.environ.get(ATTENTION_IMPL_ENV) or DEFAULT_ATTENTION_IMPL


def load_attention_impl(spec: str) -> Callable:
    """Imports ``package.module:function`` and returns the function.

    Raises:
      AttentionImplError: the spec is malformed, the module does not import,
        the attribute is missing, or it is not callable.
    """
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise AttentionImplError(
            f"--attention-impl ({spec!r}) must look like package.module:function,"
            f" e.g. {DEFAULT_ATTENTION_IMPL}"
        )
    try:
        target = importlib.import_module(module_name)
    except ImportError as error:
        raise AttentionImplError(
            f"--attention-impl ({spec!r}): cannot import module {module_name!r}: {error}"
        ) from error
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise AttentionImplError(
                f"--attention-impl ({spec!r}): {module_name!r} has no attribute {attr_path!r}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise AttentionImplError(
            f"--attention-impl ({spec!r}): {attr_path!r} is a {type(target).__name__}, not callable"
        )
    return target


def accepted_options(fn: Callable, options: Mapping[str, object]) -> dict:
    """The entries of ``options`` that ``fn`` takes as named parameters (block sizes).

    Every suite passes kernel options through this: a candidate with exactly
    litert-torch's ``scaled_dot_product_attention`` signature takes no block
    sizes and runs with its own defaults.
    """
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(options)
    return {name: value for name, value in options.items() if name in parameters}
