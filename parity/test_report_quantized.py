"""parity.report.quantized: the quantized legs' table from hand-made result rows."""

from __future__ import annotations

import pandas as pd
import pytest

from parity.quant_stats import QuantStats, stat_fields
from parity.report.quantized import COLUMNS, quantized_table


def _stat_rows(model: str, leg: str, mean_kl: float) -> list[dict]:
    stats = QuantStats(rows=10, mean_kl=mean_kl, p99_kl=2 * mean_kl, max_kl=3 * mean_kl,
                       top1_agreement=0.9, first_divergence={"p": 4, "q": None},
                       steps={"p": 12, "q": 12})  # fmt: skip
    return [
        {"suite": "parity", "model": model, "legs": f"{leg}-vs-oracle_fp64", "passed": True,
         **fields}
        for fields in stat_fields(stats)
    ]  # fmt: skip


def _pair_row(model: str, legs: str, ratio: float, passed: bool) -> dict:
    return {"suite": "parity", "model": model, "legs": legs, "metric": "max_abs_diff",
            "value": 1e-6, "ratio": ratio, "passed": passed}  # fmt: skip


def test_table_has_a_row_per_model_recipe_and_variant_with_the_recipes_flash_status():
    """Statistics by (model, recipe, variant); flash vs std: worst ratio, failures counted."""
    rows = [
        *_stat_rows("tiny", "tflite_flash_dynamic_int8", 2e-4),
        *_stat_rows("tiny", "tflite_std_dynamic_int8", 1e-4),
        *_stat_rows("tiny", "tflite_std_fp16", 1e-7),
        _pair_row("tiny", "tflite_flash_dynamic_int8-vs-tflite_std_dynamic_int8", 0.04, True),
        _pair_row("tiny", "tflite_flash_dynamic_int8-vs-tflite_std_dynamic_int8", 0.02, True),
        _pair_row("tiny", "tflite_flash-vs-tflite_std", 0.08, True),
        _pair_row("tiny", "tflite_flash_fp16-vs-tflite_std_fp16", 3.0, False),
        _pair_row("tiny", "reauthored_flash-vs-reauthored_std", 0.5, True),  # not TFLite
        _pair_row("tiny", "tflite_std_dynamic_int8-vs-oracle_dynamic_int8", 0.3, True),
        _pair_row("tiny", "tflite_std_dynamic_int8-vs-oracle_dynamic_int8", 0.2, True),
        _pair_row("tiny", "tflite_flash_dynamic_int8-vs-oracle_dynamic_int8", 1.5, False),
    ]
    table = quantized_table(rows)
    assert list(table.columns) == COLUMNS
    assert list(zip(table["recipe"], table["variant"])) == [
        ("none", "std and flash"), ("dynamic_int8", "std"), ("dynamic_int8", "flash"),
        ("fp16", "std"),
    ]  # fmt: skip
    by = table.set_index(["recipe", "variant"])
    assert by.loc[("dynamic_int8", "flash"), "mean KL (nats)"] == pytest.approx(2e-4)
    assert by.loc[("dynamic_int8", "std"), "p99 KL (nats)"] == pytest.approx(2e-4)
    assert by.loc[("dynamic_int8", "std"), "top-1 agreement"] == pytest.approx(0.9)
    assert by.loc[("dynamic_int8", "std"), "first greedy divergence"] == (
        "diverged: p step 4/12, q never/12"
    )
    assert by.loc[("dynamic_int8", "flash"), "flash vs std (same recipe)"] == (
        "held 2 prompts: worst |flash - std| / allowed 0.04"
    )
    assert by.loc[("fp16", "std"), "flash vs std (same recipe)"] == (
        "FAILED on 1 of 1 prompts: worst |flash - std| / allowed 3"
    )
    assert by.loc[("none", "std and flash"), "flash vs std (same recipe)"].startswith("held 1")
    assert by.loc[("dynamic_int8", "std"), "vs quantized oracle"] == (
        "held 2 checks: worst |leg - oracle| / allowed 0.3"
    )
    assert by.loc[("dynamic_int8", "flash"), "vs quantized oracle"] == (
        "FAILED on 1 of 1 checks: worst |leg - oracle| / allowed 1.5"
    )
    assert by.loc[("fp16", "std"), "vs quantized oracle"] == "no quantized oracle"
    assert pd.isna(by.loc[("none", "std and flash"), "mean KL (nats)"])


def test_table_is_empty_without_quantized_rows():
    """No quantized rows: an empty table with the columns (the page says not measured)."""
    table = quantized_table([_pair_row("tiny", "reauthored_flash-vs-reauthored_std", 0.5, True)])
    assert table.empty and list(table.columns) == COLUMNS
