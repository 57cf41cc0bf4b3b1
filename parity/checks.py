"""The comparisons between legs, each with its designed tolerance and its diagnosis.

Every check takes the runs of one prompt (``{leg name: LegRun}``, oracle
included), measures one leg, calls ``record`` with a result row (the
``record_result`` fixture's fields) and raises ``AssertionError`` on failure
with a message that names the case, the leg, the measured and allowed
difference, and ``parity.diagnose``'s diagnosis: the first divergent token, the
top-2 margins there and the first layer over budget.

- ``check_logits``: prefill logits at every position, or the logits of every
  decode step, against the float64 oracle, each row within the allowance its
  error spread gives (``parity.error_spread``, ``parity.tolerances.MODEL_FP32``):
  ``parity.compare.assert_close_to_oracle``. No leg's allowance depends on
  another leg's error.
- ``check_kv_cache``: the KV cache rows written by prefill, the same way.
- ``check_flash_vs_standard``: the owner's bound, max |flash - standard| <= 1e-4
  over prefill and decode logits, at the same stage (PyTorch or TFLite; see
  ``parity.tolerances.FLASH_VS_STANDARD_ATOL`` for what the TFLite stage records).
- ``check_greedy``: token-id identity of greedy generation with the oracle (or,
  for a chunked leg, with its one-shot leg).

Every check takes the prompt's ``OracleSpread`` (``Chain.spread(prompt)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import torch

from parity import legs as L
from parity.compare import Comparison, assert_close_to_oracle
from parity.diagnose import diagnose, first_divergence, top_two
from parity.error_spread import OracleSpread, Spread
from parity.tolerances import FLASH_VS_STANDARD_ATOL, MODEL_FP32, SpreadErrorModel

Record = Callable[..., object]
TokenText = Callable[[int], str]


@dataclasses.dataclass(frozen=True)
class Judge:
    """The error model every leg is judged under, and the reproduce line of failures.

    The suites use the defaults; ``parity.verify`` sets its own reproduce line.
    """

    error_model: SpreadErrorModel = MODEL_FP32
    reproduce: str = (
        "pytest parity -k '{case_id}' (add --attention-impl pkg.mod:fn to test another kernel)"
    )


DEFAULT_JUDGE = Judge()


def _diagnosed(message: str, runs, leg: str, token_text, judge: Judge, spread) -> str:
    found = diagnose(runs, leg, spread, judge.error_model)
    return f"{message}\n{found.describe(token_text)}"


def _record(record: Record, comparison: Comparison, model: str, shapes: str, extra: str = ""):
    fields = comparison.record_fields()
    fields["details"] = (fields["details"] + " " + extra).strip()
    record(suite="parity", model=model, shapes=shapes, **fields)


def _rows_allowance(spread: Spread, judge: Judge) -> torch.Tensor:
    return judge.error_model.allowance(spread)


def logit_allowance(spread: OracleSpread, stage: str, judge: Judge = DEFAULT_JUDGE):
    """Per-row allowance of the ``stage`` logits: prefill (T,), decode (n - 1,) or all (T + n - 1,).

    Raises:
      ValueError: unknown stage.
    """
    prefill = _rows_allowance(spread.prefill_logits, judge)
    decode = _rows_allowance(spread.step_logits, judge)[1:]
    if stage == "prefill":
        return prefill
    if stage == "decode":
        return decode
    if stage == "all":
        return torch.cat([prefill, decode])
    raise ValueError(f"stage ({stage!r}) must be 'prefill', 'decode' or 'all'")


def check_logits(
    runs: Mapping[str, L.LegRun],
    leg: str,
    stage: str,
    *,
    spread: OracleSpread,
    case_id: str,
    model: str,
    record: Record,
    token_text: TokenText = str,
    judge: Judge = DEFAULT_JUDGE,
    oracle: str = L.ORACLE,
) -> Comparison | None:
    """``stage`` "prefill": (T, V) logits at every prompt position; "decode": (n - 1, V)
    logits of every decode step; each row within its allowance from ``spread``, the
    spread of the ``oracle`` leg (a quantized leg's is ``L.QUANTIZED_ORACLE_OF``'s).
    Returns None when there is nothing to compare (no decode step).

    Raises:
      ValueError: unknown stage. AssertionError: over the allowance.
    """
    if stage not in ("prefill", "decode"):
        raise ValueError(f"stage ({stage!r}) must be 'prefill' or 'decode'")

    def pick(run: L.LegRun) -> torch.Tensor:
        return run.prefill_logits if stage == "prefill" else run.step_logits[1:]

    expected = pick(runs[oracle])
    if expected.shape[0] == 0:
        return None
    allowance = logit_allowance(spread, stage, judge).unsqueeze(-1)  # (rows, 1)
    run = runs[leg]

    def locate(index: tuple) -> str:
        row, vocab_id = index
        where = _position(run, row, stage, token_text)
        return f"{where}, vocab id {vocab_id} {token_text(vocab_id)!r}"

    return _compare(
        runs, leg, pick(run), expected, allowance, spread, what=f"{stage} logits",
        locate=locate, case_id=case_id, model=model, record=record, token_text=token_text,
        judge=judge, oracle=oracle,
    )  # fmt: skip


def check_kv_cache(
    runs: Mapping[str, L.LegRun],
    leg: str,
    *,
    spread: OracleSpread,
    case_id: str,
    model: str,
    record: Record,
    token_text: TokenText = str,
    judge: Judge = DEFAULT_JUDGE,
) -> Comparison:
    """The (L, 2, T, G, H) cache rows after prefill against the oracle's, per (layer, k/v,
    position) row within its allowance from ``spread``.

    Raises:
      ValueError: the leg cannot read its cache. AssertionError: over the allowance.
    """
    if runs[leg].kv is None:
        raise ValueError(f"leg {leg} exposes no KV cache")
    expected = runs[L.ORACLE].kv
    allowance = _rows_allowance(spread.kv, judge)[..., None, None]  # (L, 2, T, 1, 1)

    def locate(index: tuple) -> str:
        layer, which, row = index[:3]
        where = _position(runs[leg], row, "prefill", token_text)
        return f"layer {layer} {'kv'[which]} cache, {where}"

    return _compare(
        runs, leg, runs[leg].kv, expected, allowance, spread, what="KV cache after prefill",
        locate=locate, case_id=case_id, model=model, record=record, token_text=token_text,
        judge=judge,
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


def _compare(runs, leg, actual, expected, allowance, spread, *, what, locate, case_id, model,
             record, token_text, judge, oracle=L.ORACLE) -> Comparison:  # fmt: skip
    shapes = "x".join(str(size) for size in expected.shape)
    label = f"{case_id} {what}"
    extra = f"what={what} spread_samples={spread.samples} null_ratio={spread.null_ratio():.3g}"
    try:
        return assert_close_to_oracle(
            actual,
            expected,
            error_model=judge.error_model,
            allowance=allowance,
            case_id=label,
            names=(leg, "", oracle),
            reproduce=judge.reproduce.format(case_id=case_id),
            on_result=lambda c: _record(record, c, model, shapes, extra),
        )
    except AssertionError as error:
        flat = int(
            (actual.to(expected.dtype) - expected).abs().nan_to_num(nan=float("inf")).argmax()
        )
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), expected.shape))
        message = f"{error}\n  Greatest error at: {locate(index)}"
        raise AssertionError(_diagnosed(message, runs, leg, token_text, judge, spread)) from None


def _prefill_and_decode(run: L.LegRun) -> torch.Tensor:
    """(T + n - 1, V): the prefill logits, then the logits of every decode step."""
    return torch.cat([run.prefill_logits, run.step_logits[1:]])


def check_flash_vs_standard(
    runs: Mapping[str, L.LegRun],
    flash_leg: str,
    *,
    spread: OracleSpread,
    case_id: str,
    model: str,
    record: Record,
    token_text: TokenText = str,
    judge: Judge = DEFAULT_JUDGE,
    context: str = "",
) -> float:
    """The owner's bound: max |flash - standard| over prefill and decode-step logits.

    PyTorch legs: fails above ``FLASH_VS_STANDARD_ATOL``. TFLite legs (both carry
    LiteRT's rounding, see ``parity.tolerances``): the record says whether the
    owner's bound held; the check fails where the two legs are further apart
    than the sum of their allowances (2x the row's allowance), which no two
    correct implementations are. A quantized flash leg (``L.QUANTIZED_LEGS``) is
    judged against the standard leg of the same recipe by the same rule (why, in
    ``parity.tolerances`` beside ``FLASH_VS_STANDARD_ATOL``). ``context`` is added to the
    record and to a failure's message (e.g. which ops were quantized in each graph).
    Returns the measured difference.
    """
    standard = L.STANDARD_OF.get(flash_leg) or L.QUANTIZED_STANDARD_OF[flash_leg]
    actual, expected = _prefill_and_decode(runs[flash_leg]), _prefill_and_decode(runs[standard])
    diff = (actual - expected).abs().nan_to_num(nan=float("inf"))  # (T + n - 1, V)
    worst = float(diff.max())
    held = worst <= FLASH_VS_STANDARD_ATOL
    if L.is_tflite(flash_leg):
        bound = 2 * logit_allowance(spread, "all", judge).unsqueeze(-1)  # (T + n - 1, 1)
        what = "sum of both legs' derived allowances"
        note = f"owner's bound {FLASH_VS_STANDARD_ATOL:g}: {'held' if held else 'not held'}"
        if not held:
            note += " (both legs carry LiteRT's own rounding; each is judged against the oracle)"
    else:
        bound = torch.full((diff.shape[0], 1), FLASH_VS_STANDARD_ATOL, dtype=torch.float64)
        what, note = "owner's bound", f"owner's bound {FLASH_VS_STANDARD_ATOL:g}"
    over = ~(diff <= bound)
    passed = not bool(over.any())
    legs = f"{flash_leg}-vs-{standard}"
    ratio = float((diff / bound).nan_to_num(nan=float("inf")).max())  # worst difference / allowed
    record(suite="parity", case_id=case_id, model=model, legs=legs, metric="max_abs_diff",
           value=worst, tolerance=float(bound.max()), passed=passed, ratio=ratio,
           shapes="x".join(str(size) for size in diff.shape),
           details=f"what=prefill+decode logits, allowed: {what}; {note}"
                   + (f"; {context}" if context else ""))  # fmt: skip
    if passed:
        return worst
    row, vocab_id = divmod(int((diff / bound).nan_to_num(nan=float("inf")).argmax()), diff.shape[1])
    prompt_len = runs[flash_leg].prompt_len
    where = f"prompt position {row}" if row < prompt_len else f"decode step {row - prompt_len + 1}"
    message = (
        f"{flash_leg} differs from {standard} by more than the {what} for case {case_id}\n"
        f"  Greatest |logit difference| / allowed at {where} (sequence position {row}), vocab id"
        f" {vocab_id} {token_text(vocab_id)!r}: {float(diff[row, vocab_id]):.3e} >"
        f" {float(bound[row]):.3e} ({flash_leg} {float(actual[row, vocab_id]):.9g}, {standard}"
        f" {float(expected[row, vocab_id]):.9g}); greatest difference anywhere {worst:.3e}\n"
        f"  Mismatched logits: {int(over.sum())} / {diff.numel()}\n"
        + (f"  {context}\n" if context else "")
        + f"  Reproduce: {judge.reproduce.format(case_id=case_id)}"
    )
    raise AssertionError(_diagnosed(message, runs, flash_leg, token_text, judge, spread))


def check_greedy(
    runs: Mapping[str, L.LegRun],
    leg: str,
    *,
    spread: OracleSpread,
    case_id: str,
    model: str,
    record: Record,
    token_text: TokenText = str,
    judge: Judge = DEFAULT_JUDGE,
    against: str = L.ORACLE,
) -> int:
    """Greedy token ids of ``leg`` identical to those of ``against`` (default the oracle's)
    at every step; e.g. a chunked leg against its one-shot leg.

    One exception, stated in the record: a flip at a step where the oracle's
    top-2 margin is at most twice that step's logit allowance is a near-tie the
    error bound itself permits (an error e on both logits can swap them only if
    the oracle's margin is <= 2e; two legs each within e of the oracle can only
    choose differently where one of them leaves the oracle's choice, so the same
    margin decides); later tokens then follow another text and are not
    compared. Returns the number of identical steps.

    Raises:
      AssertionError: a flip at a margin larger than that.
    """
    run, oracle = runs[leg], runs[L.ORACLE]
    found = first_divergence(run, runs[against])
    steps = len(oracle.chosen)
    identical = steps if found is None else found.step
    allowance = margin = 0.0
    if found is not None:  # step s chose from step_logits[s]: its allowance row
        allowance = float(_rows_allowance(spread.step_logits, judge)[found.step])
        margin = top_two(oracle.step_logits[found.step]).margin
    tie = found is not None and margin <= 2 * allowance
    detail = f"identical_steps={identical}/{steps}"
    if found is not None:
        detail += f" first_divergence_step={found.step} oracle_margin={margin:.3e}"
        detail += f" near_tie={tie} (2x logit allowance {2 * allowance:.3e})"
    record(suite="parity", case_id=case_id, model=model, legs=f"{leg}-vs-{against}",
           metric="greedy_identical_steps", value=float(identical), tolerance=float(steps),
           passed=found is None or tie, shapes=f"{steps} steps", details=detail)  # fmt: skip
    if found is None or tie:
        return identical
    message = (
        f"{leg} greedy generation differs from {against} for case {case_id}: identical for"
        f" {identical} of {steps} steps (at step {found.step} {leg} chose {found.leg_token},"
        f" {against} chose {found.oracle_token}); the oracle's top-2 margin at the divergence"
        f" ({margin:.3e}) exceeds twice the logit allowance ({2 * allowance:.3e}),"
        f" so this is not a rounding near-tie\n"
        f"  Reproduce: {judge.reproduce.format(case_id=case_id)}"
    )
    raise AssertionError(_diagnosed(message, runs, leg, token_text, judge, spread))
