"""Where a leg first goes wrong: the divergent token, the logit margins there, the layer.

Given the runs of the legs on one prompt (``parity.legs.LegRun``), ``diagnose``
reports for one leg:

- the first divergent token: the first generation step where the leg's greedy
  choice differs from the oracle's (every earlier token being identical, this
  is where its own greedy text would first differ), with both tokens;
- the top-2 logit margin at that step on each side: a margin within the logit
  error bound is a near-tie that rounding alone can flip, a large one is a bug;
- the first layer whose hidden state exceeds its budget: per layer and position
  up to the divergence (or all), max_d |h_leg - h_oracle| against that row's
  allowance from the oracle's error spread (``parity.error_spread``, the error
  model of ``parity.tolerances.MODEL_FP32``). For a TFLite leg the layers of
  the PyTorch model it was converted from are searched, and, when the leg's
  file is known (``LegRun.model_file``), the graph's own block outputs too
  (``parity.tflite_layers``, propagated and isolated, with Model Explorer
  overlays written by ``parity.overlay``).

``Diagnosis.describe`` renders this as the lines appended to a failure message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import torch

from parity import legs as L
from parity.tolerances import MODEL_FP32, SpreadErrorModel

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
    position: int  # where that layer's error / budget is greatest
    error: float
    budget: float


def first_layer_over_budget(
    run: L.LegRun,
    oracle: L.LegRun,
    spread,
    last_position: int | None = None,
    error_model: SpreadErrorModel = MODEL_FP32,
) -> LayerFinding | None:
    """The first layer of ``run`` over budget against the oracle, or None if all are within.

    ``spread`` is the prompt's ``OracleSpread``; each (layer, position) row of
    the hidden states gets the allowance of its row.

    Raises:
      ValueError: a run has no hidden states.
    """
    for item in (run, oracle):
        if item.hidden is None:
            raise ValueError(f"leg {item.leg} has no hidden states to compare per layer")
    if last_position is None:
        last_position = run.hidden.shape[1] - 1
    rows = slice(0, last_position + 1)
    errors = (run.hidden[:, rows] - oracle.hidden[:, rows]).abs().amax(dim=-1)  # (L, P')
    errors = errors.nan_to_num(nan=float("inf"))
    budgets = error_model.allowance(spread.hidden)[:, rows]  # (L, P')
    over = ~(errors <= budgets)
    for layer in range(errors.shape[0]):
        if bool(over[layer].any()):
            position = int((errors[layer] / budgets[layer]).argmax())
            return LayerFinding(
                source=run.leg,
                layer=layer,
                position=position,
                error=float(errors[layer, position]),
                budget=float(budgets[layer, position]),
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
    tflite_lines: tuple = ()  # the graph's own localisation (parity.overlay.tflite_lines)

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
                f" {found.position})"
            )
        lines += self.tflite_lines
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
    runs: Mapping[str, L.LegRun],
    leg: str,
    spread,
    error_model: SpreadErrorModel = MODEL_FP32,
) -> Diagnosis:
    """Diagnoses ``leg`` from the runs of one prompt (the oracle and the leg) and its spread.

    For a TFLite leg the layer search uses its PyTorch source leg, when its runs are there.
    """
    run, oracle = runs[leg], runs[L.ORACLE]
    divergence = first_divergence(run, oracle)
    last = None if divergence is None else divergence.position
    source = leg if run.hidden is not None else L.SOURCE_OF.get(leg)
    layer, note = None, ""
    if source is None or source not in runs or runs[source].hidden is None:
        note = f"no per-layer hidden states for {leg}"
    else:
        layer = first_layer_over_budget(runs[source], oracle, spread, last, error_model)
        span = "all positions" if last is None else f"positions 0..{last}"
        note = f"{source} vs {L.ORACLE}, every block output over {span}"
        if source != leg:
            note = "searched the TFLite leg's PyTorch source: " + note
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
    graph = ()
    if L.is_tflite(leg) and run.model_file is not None and oracle.hidden is not None:
        from parity.overlay import tflite_lines

        graph = tuple(
            tflite_lines(run.model_file, leg, run.prompt_ids, oracle.hidden, spread, error_model)
        )
    return Diagnosis(leg, len(run.chosen), divergence, layer, note, num_layers, graph)
