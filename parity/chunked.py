"""Chunked prefill legs: a long prompt fed in chunks, as LiteRT-LM feeds it.

LiteRT-LM runs a prompt longer than one prefill signature through the largest
signature again and again, then the smallest signature that fits the rest,
padded (``edge_flash.runtime.chunk_plan``). The KV cache written by one chunk is
read by the next, so chunked prefill must give the one-shot numbers:

- ``ChunkedReauthoredLeg``: the re-authored PyTorch model fed the chunks, each
  padded to its signature's rows with token 0 as LiteRT pads, ``input_pos``
  advancing per chunk (legs ``reauthored_std_chunked`` / ``reauthored_flash_chunked``);
- ``ChunkedTFLiteLeg``: the converted model through
  ``LiteRTRunner.prefill_chunked`` (legs ``tflite_std_chunked`` / ``tflite_flash_chunked``).

A chunker maps (prompt length, signature lengths) to ``Chunk``s; the legs run
whatever chunks it gives, so the harness's tests can hand them a wrong one
(``parity.injected_bugs.chunks_starting_one_early``). ``planned_chunks`` is the
right one. Decode steps after the chunked prefill are one-token calls as usual.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch

from edge_flash.runtime import chunk_plan, smallest_fitting_signature
from parity import legs as L

PAD_TOKEN = 0  # what LiteRTRunner pads a chunk with (np.zeros), fed to PyTorch alike


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Prompt tokens ``[start, stop)`` fed at input positions ``position ..``, padded to
    ``signature_len`` rows. A correct chunk has ``position == start``."""

    start: int
    stop: int
    position: int
    signature_len: int


Chunker = Callable[[int, Sequence[int]], list]


def planned_chunks(prompt_len: int, signature_lengths: Sequence[int]) -> list:
    """The ``Chunk``s of ``chunk_plan(prompt_len, signature_lengths)``, each at its own start."""
    chunks, start = [], 0
    for size in chunk_plan(prompt_len, signature_lengths):
        signature = smallest_fitting_signature(size, signature_lengths)
        chunks.append(Chunk(start, start + size, start, signature))
        start += size
    return chunks


def _check_lengths(signature_lengths: Sequence[int], name: str) -> tuple:
    if not signature_lengths:
        raise ValueError(
            f"leg {name}: signature_lengths is empty; give the zoo entry chunk_seq_lens"
        )
    return tuple(signature_lengths)


class ChunkedReauthoredLeg(L.ReauthoredLeg):
    """A re-authored model whose prefill runs chunk by chunk (see the module docstring).

    Args:
      signature_lengths: the chunk signatures (the zoo entry's ``chunk_seq_lens``).
      chunker: the chunks of a prompt (default ``planned_chunks``).
    """

    def __init__(self, model, kv_cache_max_len: int, name: str,
                 signature_lengths: Sequence[int], chunker: Chunker = planned_chunks):  # fmt: skip
        super().__init__(model, kv_cache_max_len, name)
        self.signature_lengths = _check_lengths(signature_lengths, name)
        self.chunker = chunker

    def prefill(self, token_ids: Sequence[int]) -> L.Step:
        token_ids = list(token_ids)
        self.new_cache()
        logits, hidden = [], []
        for chunk in self.chunker(len(token_ids), self.signature_lengths):
            real = token_ids[chunk.start : chunk.stop]
            self.position = chunk.position
            out = self._forward(real + [PAD_TOKEN] * (chunk.signature_len - len(real)))
            logits.append(out.logits[: len(real)])  # (t, V) of the chunk's real rows
            hidden.append(out.hidden[:, : len(real)])  # (L, t, D)
            self.position = chunk.position + len(real)  # padded rows are not in the sequence
        return L.Step(
            logits=torch.cat(logits),  # (T, V)
            kv=self.cache_rows(len(token_ids)),
            hidden=torch.cat(hidden, dim=1),  # (L, T, D)
        )


class ChunkedTFLiteLeg(L.TFLiteLeg):
    """A converted model prefilled by ``LiteRTRunner.prefill_chunked`` over ``signature_lengths``.

    With a ``chunker``, its chunks are run one by one instead (``LiteRTRunner.prefill``
    with the chunk's signature, from the chunk's position): how the harness's
    tests feed LiteRT a wrong chunking.
    """

    def __init__(self, model_path, name: str, signature_lengths: Sequence[int],
                 chunker: Chunker | None = None):  # fmt: skip
        super().__init__(model_path, name)
        self.signature_lengths = _check_lengths(signature_lengths, name)
        self.chunker = chunker

    def prefill(self, token_ids: Sequence[int]) -> L.Step:
        token_ids = list(token_ids)
        self.runner.reset()
        if self.chunker is None:
            logits = self.runner.prefill_chunked(token_ids, self.signature_lengths)
        else:
            rows = []
            for chunk in self.chunker(len(token_ids), self.signature_lengths):
                self.runner.position = chunk.position
                real = token_ids[chunk.start : chunk.stop]
                rows.append(self.runner.prefill(real, chunk.signature_len))
            logits = np.concatenate(rows)  # (T, V)
        return self.step_after_prefill(logits, len(token_ids))
