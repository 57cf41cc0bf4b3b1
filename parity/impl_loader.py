"""Resolves a plug-in spec (``package.module:function``) to a callable.

The property and parity suites run against any function with the contract of
``edge_flash.flash_attention`` (``--attention-impl``), and the parity suites and
``parity.verify`` against any model builder (``--model-builder``,
``parity.model_builder``); this module turns the user's spec into that function
or into one clear error.
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
      AttentionImplError: the spec is malformed, the module does not import
        (or fails while importing, e.g. a SyntaxError in it), the attribute is
        missing, or it is not callable.
    """
    return load_callable(spec, "--attention-impl", DEFAULT_ATTENTION_IMPL, AttentionImplError)


def load_callable(spec: str, option: str, example: str, error_type: type) -> Callable:
    """Imports ``package.module:function`` named by ``option`` and returns the function.

    Shared by every plug-in option (``--attention-impl``, ``--model-builder``).

    Args:
      spec: the option's value.
      option: the option's name, for the messages.
      example: a valid spec, shown when ``spec`` is malformed.
      error_type: the ValueError subclass to raise.

    Raises:
      error_type: as ``load_attention_impl``.
    """
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise error_type(f"{option} ({spec!r}) must look like package.module:function, e.g. {example}")
    try:
        target = importlib.import_module(module_name)
    except ImportError as error:
        raise error_type(f"{option} ({spec!r}): cannot import module {module_name!r}: {error}") from error
    except Exception as error:  # noqa: BLE001 - any error while importing the user's module
        where = f" (line {error.lineno})" if isinstance(error, SyntaxError) else ""
        raise error_type(
            f"{option} ({spec!r}): importing {module_name!r} raised"
            f" {type(error).__name__}{where}: {error}"
        ) from error
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise error_type(f"{option} ({spec!r}): {module_name!r} has no attribute {attr_path!r}")
        target = getattr(target, part)
    if not callable(target):
        raise error_type(
            f"{option} ({spec!r}): {attr_path!r} is a {type(target).__name__}, not callable"
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
