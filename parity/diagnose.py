"""Where a leg first goes wrong: the divergent token, the logit margins there, the layer.

Given the runs of the legs on one prompt (``parity.legs.LegRun``), ``diagnose``
reports for one leg:

- the first divergent token: the first generation step where the leg's greedy
  choice differs from the oracle's (every earlier token being identical, this
  is where its own greedy text would first differ), with both tokens;
- the top-2 logit margin at that step on each side: a margin within the logit
  error bound is a near-tie that rounding alone can flip, a large one is a bug;
- the first layer whose hidden state exceeds its budget: per layer, the
  greatest |h_leg - h_oracle| over the positions up to the divergence (or all),
  against ``factor x (the baseline leg's error there) + floor_units x u x max |h|``
  (error model ``model-hidden-fp32`` of ``parity.tolerances``). TFLite graphs
  expose no per-layer outputs, so for a TFLite leg the layers of the PyTorch
  model it was converted from are searched instead, and the report says so.

``Diagnosis.describe`` renders this as the lines appended to a failure message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import torch

from parity import legs as L
from parity.tolerances import ERROR_MODELS

TokenText = Callable[[int], str]


@dataclasses.dataclass
class TopTwo:
    """The two largest logits of one row: ids and the margin between them."""

    first: int
    second: int
    margin: float


def top_two(row: torch.Tensor) -> TopTwo:
    """Top-2 ids and margin (logit difference, >= 0) of a (V,) logits row."""
    values, ids = row.topk(2)
    return TopTwo(int(ids[0]), int(ids[1]), float(values[0] - values[1]))


@dataclasses.dataclass
class Divergence:
    """The first generation step where a leg's greedy token differs from the oracle's."""

    step: int  # 0 = the token chosen from the prefill logits
    position: int  # position whose logits chose it (prompt length - 1 + step)
    leg_token: int
    oracle_token: int
    leg_top: TopTwo
    oracle_top: TopTwo


def first_divergence(run: L.LegRun, oracle: L.LegRun) -> Divergence | None:
    """The first step where ``run.chosen`` differs from ``oracle.chosen``, or None."""
    for step, (mine, theirs) in enumerate(zip(run.chosen, oracle.chosen)):
        if mine != theirs:
            return Divergence(
                step=step,
                position=run.prompt_len - 1 + step,
                leg_token=mine,
                oracle_token=theirs,
                leg_top=top_two(run.step_logits[step]),
                oracle_top=top_two(oracle.step_logits[step]),
            )
    return None


@dataclasses.dataclass
class LayerFinding:
    """The first layer whose hidden-state error exceeds its budget."""

    source: str  # leg whose hidden states were compared
    layer: int
    position: int  # where that layer's error is greatest
    error: float
    budget: float
    baseline_error: float
    baseline: str = ""


def layer_errors(hidden: torch.Tensor, oracle_hidden: torch.Tensor, last_position: int):
    """Per layer: greatest |hidden - oracle| over positions 0..last_position and where.

    hidden, oracle_hidden: (L, P, D). Returns (errors (L,), positions (L,)).
    """
    error = (hidden[:, : last_position + 1] - oracle_hidden[:, : last_position + 1]).abs()
    per_position = error.amax(dim=-1)  # (L, P')
    return per_position.amax(dim=-1), per_position.argmax(dim=-1)


def first_layer_over_budget(
    run: L.LegRun, baseline: L.LegRun, oracle: L.LegRun, last_position: int | None = None
) -> LayerFinding | None:
    """The first layer of ``run`` over budget against the oracle, or None if all are within.

    Raises:
      ValueError: a run has no hidden states.
    """
    for item in (run, baseline, oracle):
        if item.hidden is None:
            raise ValueError(f"leg {item.leg} has no hidden states to compare per layer")
    if last_position is None:
        last_position = run.hidden.shape[1] - 1
    model = ERROR_MODELS["model-hidden-fp32"]
    errors, positions = layer_errors(run.hidden, oracle.hidden, last_position)
    baseline_errors, _ = layer_errors(baseline.hidden, oracle.hidden, last_position)
    scale = oracle.hidden[:, : last_position + 1].abs().amax(dim=(1, 2))  # (L,)
    budgets = model.factor * baseline_errors + model.floor_units * model.unit_roundoff * scale
    for layer in range(errors.shape[0]):
        if not bool(errors[layer] <= budgets[layer]):  # NaN-safe
            return LayerFinding(
                source=run.leg,
                layer=layer,
                position=int(positions[layer]),
                error=float(errors[layer]),
                budget=float(budgets[layer]),
                baseline_error=float(baseline_errors[layer]),
                baseline=baseline.leg,
            )
    return None


@dataclasses.dataclass
class Diagnosis:
    """What ``diagnose`` found for one leg (see the module docstring)."""

    leg: str
    steps: int
    divergence: Divergence | None
    layer: LayerFinding | None
    layer_note: str  # how the layer search was done, or why it could not be
    num_layers: int = 0

    def describe(self, token_text: TokenText = str) -> str:
        """Multi-line text naming the leg, the first divergent token and the layer."""
        lines = [f"Diagnosis of leg {self.leg}:"]
        if self.divergence is None:
            lines.append(f"  greedy tokens: identical to {L.ORACLE} for all {self.steps} steps")
        else:
            lines += _describe_divergence(self.leg, self.divergence, token_text)
        lines.append(f"  layers: {self.layer_note}")
        if self.layer is not None:
            found = self.layer
            lines.append(
                f"  first layer over budget: layer {found.layer} of {found.source} (blocks counted"
                f" from 0, {self.num_layers} in all)"
                f" (hidden-state error {found.error:.3e} > budget {found.budget:.3e} at position"
                f" {found.position}; baseline {found.baseline} has {found.baseline_error:.3e})"
            )
        return "\n".join(lines)


def _describe_divergence(leg: str, found: Divergence, token_text: TokenText) -> list:
    def name(token: int) -> str:
        return f"{token} {token_text(token)!r}"

    token_line = (
        f"  first divergent token: generation step {found.step} (logits at position"
        f" {found.position}): {leg} chose {name(found.leg_token)}, {L.ORACLE} chose"
        f" {name(found.oracle_token)}"
    )
    margin_line = (
        f"  top-2 logit margin at that step: {leg} {found.leg_top.margin:.3e}"
        f" ({found.leg_top.first} over {found.leg_top.second}), {L.ORACLE}"
        f" {found.oracle_top.margin:.3e} ({found.oracle_top.first} over {found.oracle_top.second})"
    )
    return [token_line, margin_line]


def diagnose(
    runs: Mapping[str, L.LegRun], leg: str, baselines: Mapping[str, str] = L.BASELINE_OF
) -> Diagnosis:
    """Diagnoses ``leg`` from the runs of one prompt (needs the oracle, the leg, its baseline).

    For a TFLite leg the layer search uses its PyTorch source leg, when its runs are there.
    ``baselines`` maps each leg to the leg its per-layer budget is measured next to.
    """
    run, oracle = runs[leg], runs[L.ORACLE]
    divergence = first_divergence(run, oracle)
    last = None if divergence is None else divergence.position
    source = leg if run.hidden is not None else L.SOURCE_OF.get(leg)
    layer, note = None, ""
    if source is None or source not in runs or baselines.get(source) not in runs:
        note = f"no per-layer hidden states for {leg}"
    else:
        layer = first_layer_over_budget(runs[source], runs[baselines[source]], oracle, last)
        span = "all positions" if last is None else f"positions 0..{last}"
        note = f"{source} vs {L.ORACLE}, every block output over {span}"
        if source != leg:
            note = (
                "the TFLite graph exposes no per-layer outputs; searched its PyTorch source: "
                + note
            )
        if layer is None:
            note += "; every layer within budget"
            if source != leg:
                note += " (so the difference arises in conversion or in the LiteRT runtime)"
    if leg == L.HF:
        note += (
            f"; note that {L.ORACLE} is the re-authored model in float64, so a bug in the"
            " re-authored code that every re-authored leg shares shows up as HF's divergence"
        )
    hidden = runs[source].hidden if source in runs else None
    num_layers = 0 if hidden is None else hidden.shape[0]
    return Diagnosis(leg, len(run.chosen), divergence, layer, note, num_layers)
