"""The error spread: how far a correct fp32 implementation may be from the float64 oracle.

``measure_spread`` runs the float64 oracle model ``SAMPLES`` more times as one
batch, inside ``parity.rounding_noise`` (every arithmetic result gets an
fp32-sized rounding error; each batch row draws its own), on the same prompt
and fed tokens as every other leg. Each sample is thus one plausible correct
fp32 implementation of this network on these inputs. Per *row* of each compared
tensor (a position's logits, a layer's k or v row at one position, a layer's
hidden state at one position) it keeps two numbers of the samples' deviations
``d = sample - oracle``:

- ``row_max_rms``: the root mean square, over samples, of max_i |d_i| in the row;
- ``element_rms_max``: the largest, over the row's elements, of the rms over
  samples of d_i: the standard deviation of the row's noisiest element.

``parity.tolerances`` turns them into the row's allowance (see there for why
``row_max_rms + z * element_rms_max``). ``null_ratio`` is the check of that
allowance on the samples themselves: each sample judged by the allowance the
other samples give; above 1 a correct implementation would have failed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from parity.legs import BlockRecorder, stack_layers
from parity.rounding_noise import Fp32RoundingNoise, fp32_rounding_noise

# Batch rows of noisy oracle runs per prompt. Their row maxima concentrate (a max
# over hundreds of weakly correlated errors), so 8 estimate the rms to a few per
# cent; ``null_ratio`` shows where they do not.
SAMPLES = 8


@dataclasses.dataclass
class Spread:
    """Per row of one compared tensor (shape ``rows``): what the noisy samples spread to."""

    row_max_rms: torch.Tensor
    element_rms_max: torch.Tensor
    null_ratio: float  # greatest leave-one-out error / allowance over the samples

    def allowance(self, z: float) -> torch.Tensor:
        """``row_max_rms + z * element_rms_max``, float64 of shape ``rows``."""
        return self.row_max_rms + z * self.element_rms_max


@dataclasses.dataclass
class _RowStats:
    """What ``Spread`` needs of a block of rows; blocks of rows concatenate (``_joined``).

    Every statistic is per row, so a spread can be measured a block of rows at a
    time (``measure_spread`` with ``prefill_chunk``) with the same result.
    """

    row_max_sq: torch.Tensor  # (N, *rows): max over the row's elements of d^2, per sample
    element_ms_max: torch.Tensor  # (*rows): max over elements of the mean over samples of d^2
    others_element_ms_max: torch.Tensor  # (N, *rows): the same without sample r (row r)


def _row_stats(deviations: torch.Tensor) -> _RowStats:
    """The row statistics of ``deviations`` (N, *rows, E)."""
    samples = deviations.shape[0]
    squares = deviations.square()  # (N, *rows, E)
    total = squares.sum(0)  # (*rows, E)
    others = torch.stack([((total - squares[r]) / (samples - 1)).amax(-1) for r in range(samples)])
    return _RowStats(squares.amax(-1), (total / samples).amax(-1), others)


def _joined(blocks: Sequence[_RowStats], row_dim: int) -> _RowStats:
    """The row statistics of ``blocks`` concatenated along row dimension ``row_dim``."""
    if len(blocks) == 1:
        return blocks[0]
    sample_dim = row_dim + 1  # the per-sample statistics lead with N
    return _RowStats(
        torch.cat([b.row_max_sq for b in blocks], dim=sample_dim),
        torch.cat([b.element_ms_max for b in blocks], dim=row_dim),
        torch.cat([b.others_element_ms_max for b in blocks], dim=sample_dim),
    )


def _finished(stats: _RowStats, z: float) -> Spread:
    """The spread of the rows ``stats`` describe, with its leave-one-out ``null_ratio``."""
    samples = stats.row_max_sq.shape[0]
    total_row = stats.row_max_sq.sum(0)
    worst = 0.0
    for r in range(samples):  # sample r judged by the allowance of the other N - 1
        row_rms = ((total_row - stats.row_max_sq[r]) / (samples - 1)).sqrt()
        allowance = row_rms + z * stats.others_element_ms_max[r].sqrt()
        ratio = stats.row_max_sq[r].sqrt() / allowance.clamp(min=1e-300)
        worst = max(worst, float(ratio.max()))
    return Spread(
        row_max_rms=stats.row_max_sq.mean(0).sqrt(),
        element_rms_max=stats.element_ms_max.sqrt(),
        null_ratio=worst,
    )


def spread_of(deviations: torch.Tensor, z: float) -> Spread:
    """The spread of ``deviations`` (N, *rows, E): N samples of rows of E elements each.

    Raises:
      ValueError: fewer than 3 samples (the leave-one-out check needs 2 others).
    """
    _check_samples(deviations.shape[0])
    return _finished(_row_stats(deviations), z)


def _check_samples(samples: int) -> None:
    if samples < 3:
        raise ValueError(f"deviations hold {samples} samples; need at least 3")


@dataclasses.dataclass
class OracleSpread:
    """The spreads of one prompt's compared tensors (shapes as in ``parity.legs.LegRun``).

    Attributes:
      prefill_logits: rows (T,).
      step_logits: rows (n,): row 0 the last prefill row, row i decode step i.
      kv: rows (L, 2, T): layer, k or v, prompt position.
      hidden: rows (L, T + n - 1): layer, position.
      samples: noisy runs behind it.
    """

    prefill_logits: Spread
    step_logits: Spread
    kv: Spread
    hidden: Spread
    samples: int

    def null_ratio(self) -> float:
        """The greatest leave-one-out ratio over every compared tensor (see module docstring)."""
        parts = (self.prefill_logits, self.step_logits, self.kv, self.hidden)
        return max(part.null_ratio for part in parts)


def _batched_rope(samples: int):
    """``build_rope`` in float64 giving each batch row its own table, (N, 1, T, n / 2).

    Inside the noise mode every sample then draws its own rounding of the angles
    (litert-torch builds one table per call and broadcasts it over the batch).
    """
    from parity.fp64_model import build_rope_float64

    def build_rope(input_pos, n_elem, base=10_000):
        cos, sin = build_rope_float64(input_pos.repeat(samples), n_elem, base)
        if cos is None:
            return cos, sin
        shape = (samples, 1, input_pos.numel(), cos.shape[-1])
        return cos.reshape(shape), sin.reshape(shape)

    return build_rope


def measure_spread(
    oracle_model: torch.nn.Module,
    oracle_run,
    kv_cache_max_len: int,
    z: float,
    samples: int = SAMPLES,
    seed: int = 0,
    prefill_chunk: int | None = None,
) -> OracleSpread:
    """Runs ``samples`` noisy copies of the float64 oracle on ``oracle_run``'s inputs.

    Args:
      oracle_model: the float64 oracle (``parity.fp64_model.to_float64``), not
        used for anything else afterwards (its config's ``build_rope`` is replaced).
      oracle_run: the oracle's ``LegRun`` on this prompt: the prompt, the fed
        tokens and the values the deviations are taken from.
      kv_cache_max_len: S of the KV cache.
      z: the allowance's multiple of ``element_rms_max`` (for ``null_ratio``).
      samples: batch rows (>= 3). seed: seeds the noise.
      prefill_chunk: the noisy samples prefill the prompt this many rows per call
        (None: all in one call). It bounds memory on long prompts (8 float64
        score tensors of 2044 x 2048 per head would not fit): each sample is then
        a correct fp32 implementation that prefills in chunks, which in exact
        arithmetic computes what one-shot prefill does, so its deviations are
        still taken from the one-shot oracle. Every statistic is per row, so
        each chunk's logits are reduced as soon as they are made.
    """
    from litert_torch.generative.layers import kv_cache as kv_utils

    _check_samples(samples)
    model = oracle_model.eval()
    model.config = dataclasses.replace(model.config, build_rope=_batched_rope(samples))
    recorder = BlockRecorder(model.transformer_blocks, batch=True)
    cache = kv_utils.KVCache.from_model_config(
        kv_cache_max_len, model.config, dtype=torch.float64, batch_size=samples
    )
    prompt = oracle_run.prompt_ids
    chunk = prefill_chunk or len(prompt)
    calls = [prompt[i : i + chunk] for i in range(0, len(prompt), chunk)]
    calls += [[t] for t in oracle_run.fed]
    prefill_blocks, hidden_blocks, step_rows, position = [], [], [], 0
    noise = Fp32RoundingNoise(seed)
    try:
        for token_ids in calls:
            tokens = torch.tensor([token_ids] * samples, dtype=torch.int)  # (N, T_call)
            rows = slice(position, position + len(token_ids))
            input_pos = torch.arange(rows.start, rows.stop, dtype=torch.int)
            with torch.no_grad(), fp32_rounding_noise(noise):
                out = model(tokens, input_pos, cache)
            cache, logits = out["kv_cache"], out["logits"]  # logits (N, T_call, V)
            if rows.stop <= len(prompt):
                prefill_blocks.append(_row_stats(logits - oracle_run.prefill_logits[rows]))
            if rows.stop >= len(prompt):  # the prompt's last row, then each decode step
                step_rows.append(logits[:, -1])
            hidden = recorder.take() - oracle_run.hidden[:, rows]  # (N, L, T_call, D)
            hidden_blocks.append(_row_stats(hidden))
            del out, logits, hidden
            position = rows.stop
    finally:
        recorder.remove()
    kv = stack_layers(
        [torch.stack([e.k_cache[:, : len(prompt)], e.v_cache[:, : len(prompt)]], dim=1)
         for e in cache.caches], dim=1,
    )  # fmt: skip  # (N, L, 2, T, G, H)
    steps = torch.stack(step_rows, dim=1)  # (N, n, V)
    return OracleSpread(
        prefill_logits=_finished(_joined(prefill_blocks, row_dim=0), z),
        step_logits=spread_of(steps - oracle_run.step_logits, z),
        kv=spread_of((kv - oracle_run.kv).flatten(-2), z),  # rows (L, 2, T)
        hidden=_finished(_joined(hidden_blocks, row_dim=1), z),  # rows (L, P)
        samples=samples,
    )
