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


def spread_of(deviations: torch.Tensor, z: float) -> Spread:
    """The spread of ``deviations`` (N, *rows, E): N samples of rows of E elements each.

    Raises:
      ValueError: fewer than 3 samples (the leave-one-out check needs 2 others).
    """
    samples = deviations.shape[0]
    if samples < 3:
        raise ValueError(f"deviations hold {samples} samples; need at least 3")
    squares = deviations.square()  # (N, *rows, E)
    row_max_sq = squares.amax(dim=-1)  # (N, *rows)
    spread = Spread(
        row_max_rms=row_max_sq.mean(0).sqrt(),
        element_rms_max=squares.mean(0).amax(dim=-1).sqrt(),
        null_ratio=0.0,
    )
    # Leave-one-out: sample r judged by the allowance of the other N - 1.
    total_row, total_elem = row_max_sq.sum(0), squares.sum(0)
    worst = 0.0
    for r in range(samples):
        others = samples - 1
        row_rms = ((total_row - row_max_sq[r]) / others).sqrt()
        elem_max = ((total_elem - squares[r]) / others).amax(dim=-1).sqrt()
        ratio = row_max_sq[r].sqrt() / (row_rms + z * elem_max).clamp(min=1e-300)
        worst = max(worst, float(ratio.max()))
    spread.null_ratio = worst
    return spread


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
    """
    from litert_torch.generative.layers import kv_cache as kv_utils

    model = oracle_model.eval()
    model.config = dataclasses.replace(model.config, build_rope=_batched_rope(samples))
    recorder = BlockRecorder(model.transformer_blocks, batch=True)
    cache = kv_utils.KVCache.from_model_config(
        kv_cache_max_len, model.config, dtype=torch.float64, batch_size=samples
    )
    calls: Sequence[list[int]] = [oracle_run.prompt_ids] + [[t] for t in oracle_run.fed]
    logits, hidden, position = [], [], 0
    noise = Fp32RoundingNoise(seed)
    try:
        for call, token_ids in enumerate(calls):
            tokens = torch.tensor([token_ids] * samples, dtype=torch.int)  # (N, T)
            input_pos = torch.arange(position, position + len(token_ids), dtype=torch.int)
            with torch.no_grad(), fp32_rounding_noise(noise):
                out = model(tokens, input_pos, cache)
            cache = out["kv_cache"]
            if call == 0:
                rows = len(token_ids)
                kv = stack_layers(
                    [torch.stack([e.k_cache[:, :rows], e.v_cache[:, :rows]], dim=1)
                     for e in cache.caches], dim=1,
                )  # fmt: skip  # (N, L, 2, T, G, H)
            logits.append(out["logits"])  # (N, T_call, V)
            hidden.append(recorder.take())  # (N, L, T_call, D)
            position += len(token_ids)
    finally:
        recorder.remove()
    prefill = logits[0] - oracle_run.prefill_logits  # (N, T, V)
    steps = torch.stack([logits[0][:, -1]] + [row[:, -1] for row in logits[1:]], dim=1)
    kv_dev = (kv - oracle_run.kv).flatten(-2)  # (N, L, 2, T, G * H)
    hidden_dev = torch.cat(hidden, dim=2) - oracle_run.hidden  # (N, L, P, D)
    return OracleSpread(
        prefill_logits=spread_of(prefill, z),
        step_logits=spread_of(steps - oracle_run.step_logits, z),
        kv=spread_of(kv_dev, z),
        hidden=spread_of(hidden_dev, z),
        samples=samples,
    )
