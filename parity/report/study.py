"""The report's false-alarm table and detection limits, from result rows.

- ``false_alarm_table``: one row per (setting, model, leg) of the false-alarm
  study (suite ``false_alarm``, ``parity.false_alarms``): the worst error /
  allowed over every check of that leg under that setting, and how many failed.
- ``detection_table``: one row per (model, leg, where, kind) of
  ``parity.detection_limits`` (suite ``detection``): the largest attention
  error the leg's checks passed and the smallest they failed.

Pure functions of the rows (no I/O).
"""

from __future__ import annotations

import re

import pandas as pd

_SETTING = re.compile(r"setting=(\S+)")
_COUNTS = re.compile(r"checks=(\d+) failed=(\d+)")


def false_alarm_table(rows: list[dict]) -> pd.DataFrame:
    """setting x model x leg: worst error / allowed, checks, failed (false alarms)."""
    records = []
    for row in rows:
        if row.get("suite") != "false_alarm" or row.get("metric") != "worst_error_ratio":
            continue
        setting = _SETTING.search(row.get("details", ""))
        counts = _COUNTS.search(row.get("details", ""))
        records.append({
            "setting": setting.group(1) if setting else "?",
            "model": row.get("model"),
            "leg": row.get("legs", "").split("-vs-")[0],
            "worst error / allowed": row.get("value"),
            "checks": int(counts.group(1)) if counts else None,
            "false alarms": int(counts.group(2)) if counts else None,
        })  # fmt: skip
    columns = ["setting", "model", "leg", "worst error / allowed", "checks", "false alarms"]
    return pd.DataFrame(records, columns=columns)


def detection_table(rows: list[dict]) -> pd.DataFrame:
    """model x leg x perturbation: the largest size that passed and the smallest that failed."""
    records = []
    for row in rows:
        if row.get("suite") != "detection":
            continue
        where = row.get("details", "").split(":")[0].replace("attention output ", "")
        records.append({
            "model": row.get("model"),
            "leg": row.get("legs", "").split("-vs-")[0],
            "perturbation of the attention output": where,
            "passes at": row.get("tolerance"),
            "fails at": row.get("value"),
        })  # fmt: skip
    columns = ["model", "leg", "perturbation of the attention output", "passes at", "fails at"]
    return pd.DataFrame(records, columns=columns)
