"""A user's converted model as the TFLite leg (``--tflite=PATH``, ``--tflite_path`` in verify).

The file is run as it is, with no conversion, in place of the TFLite leg under
test, against HF and the float64 oracle of the model it was converted from. It
must have litert-torch's decoder signatures (``prefill_<T>`` / ``decode`` with
``tokens``, ``input_pos`` and ``kv_cache_k_<i>`` / ``kv_cache_v_<i>``, outputs
``logits`` and the cache; ``edge_flash.runtime.LiteRTRunner`` checks that) and
fit the model: the same number of layers, KV heads, head size and vocabulary,
room for the longest prompt in one prefill signature and a KV cache long
enough for the prompt and the generated tokens. Anything else is one
``TFLiteFileError`` line saying what differs and how to convert a file that fits.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

TFLITE_ENV = "PARITY_TFLITE"


class TFLiteFileError(ValueError):
    """The user's .tflite is unreadable or does not fit the model it is checked against."""


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What a converted decoder's signatures reveal of its model."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int

    @classmethod
    def of_config(cls, config) -> Architecture:
        """From a litert-torch ``ModelConfig``."""
        attn = config.block_config(0).attn_config
        return cls(config.num_layers, attn.num_query_groups, attn.head_dim, config.vocab_size)

    def describe(self) -> str:
        return (
            f"{self.num_layers} layers, {self.num_kv_heads} KV heads of {self.head_dim},"
            f" vocab {self.vocab_size}"
        )


@dataclasses.dataclass(frozen=True)
class TFLiteFile:
    """An opened user file: its path, architecture and sizes."""

    path: Path
    architecture: Architecture
    kv_cache_max_len: int
    max_prefill_len: int

    def fit_problem(self, architecture: Architecture, prefill_len: int, kv_len: int) -> str | None:
        """Why the file cannot stand for a model of ``architecture`` that prefills up to
        ``prefill_len`` tokens and fills ``kv_len`` cache slots; None if it can."""
        if self.architecture != architecture:
            return f"it has {self.architecture.describe()}; the model has {architecture.describe()}"
        if self.max_prefill_len < prefill_len:
            return f"its longest prefill signature takes {self.max_prefill_len} tokens, the prompts need {prefill_len}"
        if self.kv_cache_max_len < kv_len:
            return f"its KV cache has {self.kv_cache_max_len} slots, the prompts and tokens need {kv_len}"
        return None

    def how_to_convert(self, prefill_len: int, kv_len: int) -> str:
        return (
            "convert the model's checkpoint with python -m edge_flash.convert --checkpoint_path DIR"
            f" --prefill_seq_lens {prefill_len} --kv_cache_max_len {kv_len}"
        )


def tflite_path(option_value: str | None) -> Path | None:
    """The user's file: the option, else ``PARITY_TFLITE``, else None."""
    value = option_value or os.environ.get(TFLITE_ENV)
    return Path(value).expanduser() if value else None


def open_tflite(path: os.PathLike) -> TFLiteFile:
    """Reads the file's signatures.

    Raises:
      TFLiteFileError: missing, corrupt, or not a decoder with prefill/decode and a KV cache.
    """
    from edge_flash.runtime import LiteRTModelError, LiteRTRunner

    try:
        runner = LiteRTRunner(path)
    except LiteRTModelError as error:
        raise TFLiteFileError(f"--tflite: {error}") from None
    layout = runner.kv_cache()  # per layer (k, v), each (1, S, G, H)
    _, slots, groups, head_dim = layout[0][0].shape
    architecture = Architecture(len(layout), groups, head_dim, runner.vocab_size)
    return TFLiteFile(Path(path), architecture, int(slots), runner.max_prefill_len)


def match_model(file: TFLiteFile, candidates: Mapping[str, tuple]) -> str:
    """The one candidate the file fits.

    Args:
      candidates: model name -> (Architecture, prefill_len, kv_len).

    Raises:
      TFLiteFileError: it fits none (each reason named) or more than one.
    """
    problems = {name: file.fit_problem(*needs) for name, needs in candidates.items()}
    fitting = [name for name, problem in problems.items() if problem is None]
    if len(fitting) == 1:
        return fitting[0]
    if fitting:
        raise TFLiteFileError(
            f"--tflite ({file.path}) fits several models ({fitting}); select one with -k"
        )
    same_shape = {n: p for n, p in problems.items() if candidates[n][0] == file.architecture}
    if same_shape:
        name, problem = next(iter(same_shape.items()))
        _, prefill, kv = candidates[name]
        raise TFLiteFileError(
            f"--tflite ({file.path}) does not fit {name}: {problem}; {file.how_to_convert(prefill, kv)}"
        )
    known = "; ".join(f"{n}: {needs[0].describe()}" for n, needs in candidates.items())
    raise TFLiteFileError(
        f"--tflite ({file.path}) has {file.architecture.describe()}, which is no zoo model's"
        f" ({known})"
    )
