"""Flash vs standard on the same inputs: the greatest absolute difference of their outputs.

Every attention-alone child saves its output (.npy, seeded inputs, identical
across impls of one length); this module compares each flash output with each
standard output of the same runtime and length, and turns that into rows
(suite="bench", metric "max_abs_diff") the report's claims read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from parity.bench.cases import STANDARD_IMPLS, BenchCase
from parity.results import ResultRow

_CHUNK_ROWS = 256  # compare along T in chunks: no full-size temporary at T = 8192


def output_path(directory: Path, case: BenchCase) -> Path:
    """Where the child of ``case`` saves its output."""
    return Path(directory) / "outputs" / f"{case.case_id}.npy"


def max_abs_difference(actual_path: Path, expected_path: Path) -> float:
    """max |actual - expected| over two saved outputs of equal shape [B, T, N, H]; inf if non-finite.

    Raises:
      ValueError: the shapes differ.
    """
    actual = np.load(actual_path, mmap_mode="r")
    expected = np.load(expected_path, mmap_mode="r")
    if actual.shape != expected.shape:
        raise ValueError(
            f"outputs {actual_path} {actual.shape} and {expected_path} {expected.shape} differ"
        )
    worst = 0.0
    for t0 in range(0, actual.shape[1], _CHUNK_ROWS):
        diff = np.abs(
            actual[:, t0 : t0 + _CHUNK_ROWS].astype(np.float64) - expected[:, t0 : t0 + _CHUNK_ROWS]
        )
        if not np.isfinite(diff).all():
            return float("inf")
        worst = max(worst, float(diff.max()))
    return worst


def difference_rows(saved: list[tuple[BenchCase, Path]]) -> list[ResultRow]:
    """Rows for every (flash, standard) pair of saved outputs with the same runtime and lengths."""
    rows = []
    for flash, flash_path in saved:
        if flash.impl != "flash":
            continue
        for standard, standard_path in saved:
            same = (standard.runtime, standard.seq_q, standard.seq_kv, standard.xnnpack) == (
                flash.runtime, flash.seq_q, flash.seq_kv, flash.xnnpack,
            )  # fmt: skip
            if not same or standard.impl not in STANDARD_IMPLS:
                continue
            legs = f"{flash.impl_label}-vs-{standard.impl_label}"
            value = max_abs_difference(flash_path, standard_path)
            rows.append(
                ResultRow(
                    suite="bench",
                    case_id=f"{flash.runtime}-attention-{legs}-t{flash.seq_q}-s{flash.seq_kv}",
                    model="attention",
                    legs=f"{flash.runtime}/attention/{legs}",
                    metric="max_abs_diff",
                    value=value,
                    tolerance=None,  # a measurement for the claims; the suites judge accuracy
                    passed=True,
                    shapes=f"t{flash.seq_q}-s{flash.seq_kv}-{flash.shape.tag()}",
                    seed=0,
                    details=json.dumps({"case": flash.to_dict(), "status": "difference"}),
                )
            )
    return rows
