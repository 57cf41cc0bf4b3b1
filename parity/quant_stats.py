"""How far a quantized leg's next-token distributions are from the float64 oracle's.

Quantization changes the model on purpose, so no rounding-error model bounds a
quantized leg against the oracle; it is judged as llama.cpp's
``perplexity --kl-divergence`` judges a quantized model, by statistics of the
next-token distributions at every judged position:

- ``kl_divergence``: per row, KL(P || Q) = sum_v P(v) (log P(v) - log Q(v)) in
  nats, P = softmax of the reference (oracle) logits, Q = softmax of the leg's;
- ``QuantStats``: over the rows of one or more prompts, mean KL, the 99th
  percentile of KL, the greatest KL, the share of rows whose top-1 token is the
  oracle's (llama.cpp's "same top p"), and per prompt the first generation step
  where the leg's own greedy choice leaves the oracle's (the legs are fed the
  oracle's tokens, so up to that step a free-running greedy run of the leg would
  have produced the oracle's text).

The rows of a prompt are its T prefill positions and its n - 1 decode steps (the
last prefill row is generation step 0). Pure numerics: float64, no I/O.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import torch

from parity import legs as L

# The percentile of the per-row KL reported beside its mean (llama.cpp: "99.0%").
KL_PERCENTILE = 0.99


def kl_divergence(reference_logits: torch.Tensor, actual_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(reference) || softmax(actual)) per row, in nats, float64.

    Args:
      reference_logits, actual_logits: (rows, V) logits, any float dtype.

    Returns (rows,) float64: 0 exactly for identical rows, inf where the actual row
    gives 0 probability to a token the reference does not, NaN where the actual
    row holds NaN.

    Raises:
      ValueError: the shapes differ or are not (rows, V).
    """
    if reference_logits.shape != actual_logits.shape or reference_logits.dim() != 2:
        raise ValueError(
            f"reference_logits {tuple(reference_logits.shape)} and actual_logits"
            f" {tuple(actual_logits.shape)} must both be (rows, V)"
        )
    log_p = torch.log_softmax(reference_logits.to(torch.float64), dim=-1)  # (rows, V)
    log_q = torch.log_softmax(actual_logits.to(torch.float64), dim=-1)  # (rows, V)
    p = log_p.exp()
    # Tokens with P = 0 (exp underflow) contribute nothing; without the guard 0 * inf is NaN.
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(dim=-1)


def percentile(values: torch.Tensor, fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (linear interpolation between order statistics,
    as numpy's default); NaN if any value is NaN.

    Raises:
      ValueError: ``values`` is empty or ``fraction`` is outside [0, 1].
    """
    if values.numel() == 0:
        raise ValueError("values is empty; expected at least one value")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction ({fraction}) must be within [0, 1]")
    flat = values.to(torch.float64).flatten()
    if bool(flat.isnan().any()):
        return math.nan
    return float(torch.quantile(flat, fraction))


def next_token_logits(run: L.LegRun) -> torch.Tensor:
    """(T + n - 1, V): the prefill logits at every position, then every decode step's."""
    return torch.cat([run.prefill_logits, run.step_logits[1:]])


def first_greedy_divergence(run: L.LegRun, oracle: L.LegRun) -> int | None:
    """The first generation step where ``run``'s greedy token is not the oracle's, or None."""
    return next(
        (step for step, (mine, theirs) in enumerate(zip(run.chosen, oracle.chosen))
         if mine != theirs),
        None,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class QuantStats:
    """KL statistics of one leg over the rows of one or more prompts (module docstring).

    Attributes:
      rows: the number of judged rows (positions and decode steps).
      mean_kl, p99_kl, max_kl: of the per-row KL(P_oracle || P_leg), nats.
      top1_agreement: the share of rows whose argmax is the oracle's, in [0, 1].
      first_divergence: prompt -> first generation step where the leg's greedy
        choice leaves the oracle's, None where it never does.
      steps: prompt -> generation steps compared.
    """

    rows: int
    mean_kl: float
    p99_kl: float
    max_kl: float
    top1_agreement: float
    first_divergence: Mapping[str, int | None]
    steps: Mapping[str, int]

    def divergence_text(self) -> str:
        """e.g. ``ids-1 never/12, ids-9 step 4/12``."""
        return ", ".join(
            f"{prompt} {'never' if step is None else f'step {step}'}/{self.steps[prompt]}"
            for prompt, step in self.first_divergence.items()
        )


def quant_stats(runs: Mapping[str, L.LegRun], oracles: Mapping[str, L.LegRun]) -> QuantStats:
    """The statistics of a leg's ``runs`` (prompt -> LegRun) against the oracle's runs of the
    same prompts, pooled over the prompts' rows.

    Raises:
      ValueError: no prompts, a prompt without an oracle run, or rows that do not line up.
    """
    if not runs:
        raise ValueError("runs is empty; expected the runs of at least one prompt")
    missing = sorted(set(runs) - set(oracles))
    if missing:
        raise ValueError(f"prompts {missing} have no oracle run")
    kl, same = [], []
    for prompt, run in runs.items():
        actual, expected = next_token_logits(run), next_token_logits(oracles[prompt])
        kl.append(kl_divergence(expected, actual))
        same.append(actual.argmax(dim=-1) == expected.argmax(dim=-1))
    kl_rows, same_rows = torch.cat(kl), torch.cat(same)
    return QuantStats(
        rows=int(kl_rows.numel()),
        mean_kl=float(kl_rows.mean()),
        p99_kl=percentile(kl_rows, KL_PERCENTILE),
        max_kl=float(kl_rows.max()) if not bool(kl_rows.isnan().any()) else math.nan,
        top1_agreement=float(same_rows.to(torch.float64).mean()),
        first_divergence={p: first_greedy_divergence(r, oracles[p]) for p, r in runs.items()},
        steps={prompt: len(oracles[prompt].chosen) for prompt in runs},
    )


# The metrics of the result rows of a leg's statistics (``parity.report`` reads them).
MEAN_KL = "mean_kl"
P99_KL = "p99_kl"
TOP1_AGREEMENT = "top1_agreement"
FIRST_GREEDY_DIVERGENCE = "first_greedy_divergence"
STAT_METRICS = (MEAN_KL, P99_KL, TOP1_AGREEMENT, FIRST_GREEDY_DIVERGENCE)


def stat_fields(stats: QuantStats) -> list[dict]:
    """Per metric of ``STAT_METRICS``: ``{metric, value, details}`` for a result row.

    ``first_greedy_divergence``'s value is the earliest step over the prompts at
    which the leg's greedy choice left the oracle's, or the steps compared (the
    fewest over the prompts) if it never did; its details say which, per prompt.
    """
    steps = min(stats.steps.values())
    diverged = [step for step in stats.first_divergence.values() if step is not None]
    pooled = f"rows={stats.rows} (prefill positions + decode steps of every prompt)"
    return [
        {"metric": MEAN_KL, "value": stats.mean_kl, "details": f"nats; {pooled}"},
        {"metric": P99_KL, "value": stats.p99_kl,
         "details": f"nats, {KL_PERCENTILE:.0%} quantile; max {stats.max_kl:.3e}; {pooled}"},
        {"metric": TOP1_AGREEMENT, "value": stats.top1_agreement,
         "details": f"share of rows whose argmax is the oracle's; {pooled}"},
        {"metric": FIRST_GREEDY_DIVERGENCE, "value": float(min(diverged, default=steps)),
         "details": f"{'diverged' if diverged else 'never diverged'}: {stats.divergence_text()}"},
    ]  # fmt: skip


def kv_onset(actual: L.LegRun, expected: L.LegRun, allowance: torch.Tensor) -> str:
    """Where two legs' KV caches after prefill first part by more than ``allowance``.

    ``allowance`` is (L, 2, T), per (layer, k/v, position) row. Returns one line
    naming the first layer with a row over it and the positions over there: a
    difference that starts at one position of one layer, every earlier layer
    within the allowance, is one rounding flip of a quantized activation (the
    same op rounding to the next integer in one leg), not a drift of attention.

    Raises:
      ValueError: a leg exposes no KV cache.
    """
    if actual.kv is None or expected.kv is None:
        raise ValueError(f"legs {actual.leg} and {expected.leg} must both expose their KV cache")
    diff = (actual.kv - expected.kv).abs().nan_to_num(nan=math.inf).flatten(3).amax(-1)  # (L, 2, T)
    over = ~(diff <= allowance)
    layers = over.flatten(1).any(-1)  # (L,)
    if not bool(layers.any()):
        return "KV cache after prefill: every layer within the allowance"
    layer = int(layers.nonzero()[0])
    positions = sorted({int(p) for p in over[layer].nonzero()[:, 1]})
    return (
        f"KV cache after prefill: layers 0..{layer - 1} within the allowance, layer {layer}"
        f" over it at positions {positions} (greatest difference {float(diff[layer].max()):.3g})"
    )
