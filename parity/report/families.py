"""The report's family matrix: decoder family x leg -> passed, failed (with why) or unsupported.

A chain row's ``model`` is a zoo entry; its family is the entry's ``family``
(``parity.zoo``), and its leg is the first half of ``legs`` ("<leg>-vs-oracle_fp64").
A cell is

- ``passed``, with the worst error / allowed over every check of that leg;
- ``FAILED``, with the worst failing check and the diagnosis lines of its test's
  failure message (the first divergent layer, for example);
- ``unsupported``, with the reason in the "why not" column, for a litert-torch
  family that ``edge_flash.families`` does not build (``UNMAPPED``);
- ``not run``, for a leg of a built family that this session did not select;
  a family without a transformers model (OpenELM) has its HF cell ``unsupported``.

Pure functions of the loaded rows and events (no I/O).
"""

from __future__ import annotations

import re

import pandas as pd

from parity import legs as L

_CASE = re.compile(r"\[(?P<case>[^\]]+)\]")
_DIAGNOSIS_WORDS = ("layer", "first", "divergen", "token")


def family_matrix(rows: list[dict], events: list[dict]) -> pd.DataFrame:
    """One row per zoo model (family, model), one column per leg; cells as the docstring says."""
    from edge_flash.families import UNMAPPED
    from parity.zoo import ZOO

    legs = list(L.ALL_LEGS) + list(L.CHUNKED_LEGS)
    by_model = {model.name: model for model in ZOO}
    cells: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        model, leg = row.get("model"), row.get("legs", "").split("-vs-")[0]
        if model in by_model and leg in legs and row.get("suite") == "parity":
            cells.setdefault((model, leg), []).append(row)
    failures = _failure_messages(events)
    errored = _errored_cells(failures, ZOO, legs)
    records = []
    for model in ZOO:
        run = {
            leg: errored.get((model.name, leg)) or _cell(cells.get((model.name, leg)), failures)
            for leg in legs
        }
        if model.no_hf_model and run[L.HF] == "not run":
            run[L.HF] = "unsupported"
        if any(cell != "not run" for cell in run.values()):
            why = f"no HF leg: {model.no_hf_model}" if model.no_hf_model else ""
            records.append({"family": model.family, "model": model.name, **run, "why not": why})
    for family, reason in sorted(UNMAPPED.items()):
        unsupported = dict.fromkeys(legs, "unsupported")
        records.append({"family": family, "model": "-", **unsupported, "why not": reason})
    return pd.DataFrame(records, columns=["family", "model", *legs, "why not"])


def _cell(rows: list[dict] | None, failures: dict[str, str]) -> str:
    if not rows:
        return "not run"
    ratios = [r.get("ratio") for r in rows if isinstance(r.get("ratio"), (int, float))]
    failed = [r for r in rows if r.get("passed") is False]
    if not failed:
        worst = f", worst error / allowed {max(ratios):.2f}" if ratios else ""
        return f"passed ({len(rows)} checks{worst})"
    worst_row = max(failed, key=lambda r: r.get("ratio") or 0.0)
    text = (
        f"FAILED: {worst_row.get('case_id')} at {worst_row.get('ratio', float('nan')):.3g}x allowed"
    )
    diagnosis = failures.get(_case_of(worst_row.get("test", "")))
    return f"{text}; {diagnosis}" if diagnosis else text


def _errored_cells(failures: dict[str, str], zoo, legs: list[str]) -> dict:
    """(model, leg) -> "FAILED: ..." for tests that failed before writing any row."""
    cells = {}
    for case, lines in failures.items():
        for model in zoo:
            rest = case[len(model.name) + 1 :] if case.startswith(model.name + "-") else None
            matching = [leg for leg in legs if rest is not None and rest.startswith(leg + "-")]
            if matching:
                cells[(model.name, max(matching, key=len))] = f"FAILED: {case}: {lines[:300]}"
    return cells


def _case_of(test_id: str) -> str:
    match = _CASE.search(test_id or "")
    return match.group("case") if match else ""


def _failure_messages(events: list[dict]) -> dict[str, str]:
    """case id -> the diagnosis lines ("E ...") of its test's failure message."""
    found = {}
    for event in events:
        if event.get("event") != "test_failed":
            continue
        lines = [
            line[1:].strip()
            for line in str(event.get("message", "")).splitlines()
            if line.startswith("E ")
        ]
        lines = [line for line in lines if any(w in line for w in _DIAGNOSIS_WORDS)] or lines[:1]
        case = _case_of(event.get("test", "") or event.get("nodeid", ""))
        if case and lines:
            found[case] = " / ".join(lines[:3])
    return found
