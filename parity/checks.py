"""The comparisons between legs, each with its designed tolerance and its diagnosis.

Every check takes the runs of one prompt (``{leg name: LegRun}``, oracle
included), measures one leg, calls ``record`` with a result row (the
``record_result`` fixture's fields) and raises ``AssertionError`` on failure
with a message that names the case, the leg, the measured and allowed
difference, and ``parity.diagnose``'s diagnosis: the first divergent token, the
top-2 margins there and the first layer over budget.

- ``check_logits``: prefill logits at every position, or the logits of every
  decode step, against the float64 oracle next to the leg's baseline
  (``parity.legs.BASELINE_OF``): ``parity.compare.assert_close_to_oracle``.
- ``check_kv_cache``: the KV cache rows written by prefill, the same way.
- ``check_flash_vs_standard``: the owner's bound, max |flash - standard| <= 1e-4
  over prefill and decode logits, at the same stage (PyTorch or TFLite).
- ``check_greedy``: token-id identity of greedy generation with the oracle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import torch

from parity import legs as L
from parity.compare import Comparison, assert_close_to_oracle
from parity.diagnose import diagnose, first_divergence
from parity.tolerances import FLASH_VS_STANDARD_ATOL, ErrorModel, model_error_model

Record = Callable[..., object]
TokenText = Callable[[int], str]


@dataclasses.dataclass(frozen=True)
class Judge:
    """Who each leg is judged next to and under which error model.

    The suites use the defaults (``parity.legs.BASELINE_OF``,
    ``parity.tolerances.model_error_model``); ``parity.verify``, which runs
    only HF, the model under test and its TFLite file, overrides both.
    """

    baselines: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(L.BASELINE_OF))
    error_models: Mapping[str, ErrorModel] = dataclasses.field(default_factory=dict)
    reproduce: str = (
        "pytest parity -k '{case_id}' (add --attention-impl pkg.mod:fn to test another kernel)"
    )

    def baseline(self, leg: str) -> str:
        return self.baselines[leg]

    def error_model(self, leg: str) -> ErrorModel:
        return self.error_models.get(leg) or model_error_model(leg)


DEFAULT_JUDGE = Judge()


def _diagnosed(message: str, runs, leg: str, token_text, judge: Judge) -> str:
    return f"{message}\n{diagnose(runs, leg, judge.baselines).describe(token_text)}"


def _record(record: Record, comparison: Comparison, model: str, shapes: str, extra: str = ""):
    fields = comparison.record_fields()
    fields["details"] = (fields["details"] + " " + extra).strip()
    record(suite="parity", model=model, shapes=shapes, **fields)


def check_logits(
    runs: Mapping[str, L.LegRun],
    leg: str,
    stage: str,
    *,
    case_id: str,
    model: str,
    record: Record,
    token_text: TokenText = str,
    judge: Judge = DEFAULT_JUDGE,
) -> Comparison | None:
    """``stage`` "prefill": (T, V) logits at every prompt position; "decode": (n - 1, V)
    logits of every decode step. Returns None when there is nothing to compare
    (no decode step). Error model: ``model_error_model(leg)``.

    Raises:
      ValueError: unknown stage. AssertionError: over the allowance.
    """
    if stage not in ("prefill", "decode"):
        raise ValueError(f"stage ({stage!r}) must be 'prefill' or 'decode'")
    baseline = judge.baseline(leg)

    def pick(run: L.LegRun) -> torch.Tensor:
        return run.prefill_logits if stage == "prefill" else run.step_logits[1:]

    expected = pick(runs[L.ORACLE])
    if expected.shape[0] == 0:
        return None
    # Logit errors come from hidden-state errors times the LM head, so they scale
    # with the row's largest logit rather than with each logit's own size.
    scale = expected.abs().amax(dim=-1, keepdim=True)  # (rows, 1)
    run = runs[leg]

    def locate(index: tuple) -> str:
        row, vocab_id = index
        where = _position(run, row, stage, token_text)
        return f"{where}, vocab id {vocab_id} {token_text(vocab_id)!r}"

    return _compare(
        runs, leg, pick(run), expected, pick(runs[baseline]), scale,
        what=f"{stage} logits", locate=locate, case_id=case_id, model=model, record=record,
        token_text=token_text, judge=judge,
    )  # fmt: skip


def check_kv_cache(
    runs: Mapping[str, L.LegRun],
    leg: str,
    *,
    case_id: str,
    model: str,
    record: Record,
    token_text: TokenText = str,
    judge: Judge = DEFAULT_JUDGE,
) -> Comparison:
    """The (L, 2, T, G, H) cache rows after prefill against the oracle's.

    Raises:
      ValueError: the leg cannot read its cache. AssertionError: over the allowance.
    """
    if runs[leg].kv is None:
        raise ValueError(f"leg {leg} exposes no KV cache")
    expected = runs[L.ORACLE].kv
    # Rounding in k and v scales with each layer's own magnitude (k after RoPE).
    scale = expected.abs().amax(dim=(2, 3, 4), keepdim=True)  # (L, 2, 1, 1, 1)

    def locate(index: tuple) -> str:
        layer, which, row = index[:3]
        where = _position(runs[leg], row, "prefill", token_text)
        return f"layer {layer} {'kv'[which]} cache, {where}"

    return _compare(
        runs, leg, runs[leg].kv, expected, runs[judge.baseline(leg)].kv, scale,
        what="KV cache after prefill", locate=locate, case_id=case_id, model=model,
        record=record, token_text=token_text, judge=judge,
    )  # fmt: skip


def _position(run: L.LegRun, row: int, stage: str, token_text: TokenText) -> str:
    """A prefill row or decode-step row, as the position and the token fed there."""
    if stage == "prefill":
        token = run.prompt_ids[row]
        return f"prompt position {row} (input token {token} {token_text(token)!r})"
    token = run.fed[row]
    return (
        f"decode step {row + 1} (position {run.prompt_len + row}, fed token {token}"
        f" {token_text(token)!r})"
    )


def _compare(runs, leg, actual, expected, baseline, scale, *, what, locate, case_id, model,
             record, token_text, judge) -> Comparison:  # fmt: skip
    shapes = "x".join(str(size) for size in expected.shape)
    label = f"{case_id} {what}"
    try:
        return assert_close_to_oracle(
            actual,
            expected,
            error_model=judge.error_model(leg),
            baseline=baseline,
            rounding_scale=scale,
            case_id=label,
            names=(leg, judge.baseline(leg), L.ORACLE),
            reproduce=judge.reproduce.format(case_id=case_id),
            on_result=lambda c: _record(record, c, model, shapes, f"what={what}"),
        )
    except AssertionError as error:
        flat = int(
            (actual.to(expected.dtype) - expected).abs().nan_to_num(nan=float("inf")).argmax()
        )
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), expected.shape))
        message = f"{error}\n  Greatest error at: {locate(index)}"
        raise AssertionError(_diagnosed(message, runs, leg, token_text, judge)) from None


def check_flash_vs_standard(
    runs: Mapping[str, L.LegRun],
    flash_leg: str,
    *,
    case_id: str,
    model: str,
    record: Record,
    token_text: TokenText = str,
    judge: Judge = DEFAULT_JUDGE,
) -> float:
    """max |flash - standard| over prefill and decode-step logits <= ``FLASH_VS_STANDARD_ATOL``.

    Returns the measured difference. Raises AssertionError over the bound.
    """
    standard = L.STANDARD_OF[flash_leg]
    actual = torch.cat([runs[flash_leg].prefill_logits, runs[flash_leg].step_logits[1:]])
    expected = torch.cat([runs[standard].prefill_logits, runs[standard].step_logits[1:]])
    diff = (actual - expected).abs().nan_to_num(nan=float("inf"))  # (T + n - 1, V)
    worst = float(diff.max())
    passed = worst <= FLASH_VS_STANDARD_ATOL
    shapes = "x".join(str(size) for size in diff.shape)
    legs = f"{flash_leg}-vs-{standard}"
    record(suite="parity", case_id=case_id, model=model, legs=legs, metric="max_abs_diff",
           value=worst, tolerance=FLASH_VS_STANDARD_ATOL, passed=passed, shapes=shapes,
           details="what=prefill+decode logits, owner's bound")  # fmt: skip
    if passed:
        return worst
    row, vocab_id = divmod(int(diff.argmax()), diff.shape[1])
    prompt_len = runs[flash_leg].prompt_len
    where = f"prompt position {row}" if row < prompt_len else f"decode step {row - prompt_len + 1}"
    message = (
        f"{flash_leg} differs from {standard} by more than the owner's bound for case {case_id}\n"
        f"  Greatest |logit difference|: {worst:.3e} > {FLASH_VS_STANDARD_ATOL:g} at {where}"
        f" (sequence position {row}), vocab id {vocab_id} {token_text(vocab_id)!r}:"
        f" {flash_leg} {float(actual[row, vocab_id]):.9g}, {standard}"
        f" {float(expected[row, vocab_id]):.9g}\n"
        f"  Mismatched logits: {int((diff > FLASH_VS_STANDARD_ATOL).sum())} / {diff.numel()}\n"
        f"  Reproduce: {judge.reproduce.format(case_id=case_id)}"
    )
    raise AssertionError(_diagnosed(message, runs, flash_leg, token_text, judge))


def check_greedy(
    runs: Mapping[str, L.LegRun],
    leg: str,
    *,
    case_id: str,
    model: str,
    record: Record,
    token_text: TokenText = str,
    judge: Judge = DEFAULT_JUDGE,
) -> int:
    """Greedy token ids of ``leg`` identical to the oracle's at every step.

    One exception, stated in the record: a flip at a step where the oracle's
    top-2 margin is at most twice the decode-logit allowance of this leg is a
    near-tie the error bound itself permits (leg error e on both logits can
    swap them only if the oracle's margin is <= 2e); later tokens then follow
    another text and are not compared. Returns the number of identical steps.

    Raises:
      AssertionError: a flip at a margin larger than that.
    """
    run, oracle = runs[leg], runs[L.ORACLE]
    found = first_divergence(run, oracle)
    steps = len(oracle.chosen)
    identical = steps if found is None else found.step
    allowance = _logit_allowance(runs, leg, judge)
    tie = found is not None and found.oracle_top.margin <= 2 * allowance
    detail = f"identical_steps={identical}/{steps}"
    if found is not None:
        detail += f" first_divergence_step={found.step} oracle_margin={found.oracle_top.margin:.3e}"
        detail += f" near_tie={tie} (2x logit allowance {2 * allowance:.3e})"
    record(suite="parity", case_id=case_id, model=model, legs=f"{leg}-vs-{L.ORACLE}",
           metric="greedy_identical_steps", value=float(identical), tolerance=float(steps),
           passed=found is None or tie, shapes=f"{steps} steps", details=detail)  # fmt: skip
    if found is None or tie:
        return identical
    message = (
        f"{leg} greedy generation differs from {L.ORACLE} for case {case_id}: identical for"
        f" {identical} of {steps} steps; the oracle's top-2 margin at the divergence"
        f" ({found.oracle_top.margin:.3e}) exceeds twice the logit allowance ({2 * allowance:.3e}),"
        f" so this is not a rounding near-tie\n"
        f"  Reproduce: {judge.reproduce.format(case_id=case_id)}"
    )
    raise AssertionError(_diagnosed(message, runs, leg, token_text, judge))


def _logit_allowance(runs: Mapping[str, L.LegRun], leg: str, judge: Judge) -> float:
    """The greatest logit error the error model allows this leg (prefill and decode rows)."""
    model = judge.error_model(leg)
    oracle = runs[L.ORACLE]
    expected = torch.cat([oracle.prefill_logits, oracle.step_logits[1:]])
    baseline = runs[judge.baseline(leg)]
    base = torch.cat([baseline.prefill_logits, baseline.step_logits[1:]])
    baseline_error = float((base - expected).abs().max())
    scale = float(expected.abs().max())
    return model.factor * baseline_error + model.floor_units * model.unit_roundoff * scale
