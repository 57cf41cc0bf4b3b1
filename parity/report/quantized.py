"""The report's table of the quantized legs (``parity/test_chain_quantized.py``), from result rows.

One row per (model, recipe, variant): the leg's KL statistics against the float64
oracle (``parity.quant_stats``: mean and 99th-percentile KL in nats, top-1
agreement, first greedy divergence) and, for the recipe, whether flash stayed
within the rule of standard on every prompt and the worst
|flash - standard| / allowed, and, for a recipe with a quantized oracle
(``L.QUANTIZED_ORACLE_OF``), whether the leg stayed within its allowance of
that oracle. The fp32 TFLite legs' flash-vs-standard ratio is listed as recipe
"none" when the results hold it, for comparison.

Pure functions of the rows (no I/O).
"""

from __future__ import annotations

import pandas as pd

from parity import legs as L
from parity.quant_stats import (
    FIRST_GREEDY_DIVERGENCE,
    MEAN_KL,
    P99_KL,
    STAT_METRICS,
    TOP1_AGREEMENT,
)

COLUMNS = [
    "model", "recipe", "variant", "mean KL (nats)", "p99 KL (nats)", "top-1 agreement",
    "first greedy divergence", "flash vs std (same recipe)", "vs quantized oracle",
]  # fmt: skip
_STAT_COLUMNS = {
    MEAN_KL: "mean KL (nats)",
    P99_KL: "p99 KL (nats)",
    TOP1_AGREEMENT: "top-1 agreement",
}
_FP32_PAIR = f"{L.TFLITE_FLASH}-vs-{L.TFLITE_STD}"


def _recipe_of_pair(legs: str) -> str | None:
    """The recipe of a flash-vs-standard row's legs, "none" for the fp32 TFLite pair."""
    if legs == _FP32_PAIR:
        return "none"
    flash = legs.split("-vs-")[0]
    if flash in L.QUANTIZED_STANDARD_OF and legs == f"{flash}-vs-{L.QUANTIZED_STANDARD_OF[flash]}":
        return L.QUANTIZED_OF[flash][1]
    return None


def _flash_vs_standard(rows: list[dict]) -> dict:
    """(model, recipe) -> "held: worst ... (N prompts)" / "FAILED on k of N prompts: ..."."""
    pairs: dict = {}
    for row in rows:
        recipe = _recipe_of_pair(row.get("legs", ""))
        if row.get("suite") != "parity" or row.get("metric") != "max_abs_diff" or not recipe:
            continue
        pairs.setdefault((row.get("model"), recipe), []).append(row)
    return {key: _verdict(found, "|flash - std|", "prompts") for key, found in pairs.items()}


def _verdict(found: list[dict], what: str, unit: str) -> str:
    failed = sum(1 for row in found if not row.get("passed"))
    ratios = [row["ratio"] for row in found if isinstance(row.get("ratio"), (int, float))]
    worst = f"worst {what} / allowed {max(ratios):.3g}" if ratios else "no ratio"
    verdict = "held" if not failed else f"FAILED on {failed} of"
    return f"{verdict} {len(found)} {unit}: {worst}"


def _against_quantized_oracle(rows: list[dict]) -> dict:
    """(model, recipe, variant) -> the verdict of the leg's checks against its recipe's
    quantized oracle (rows whose legs are ``<leg>-vs-oracle_<recipe>``)."""
    found: dict = {}
    for row in rows:
        leg, _, against = row.get("legs", "").partition("-vs-")
        if row.get("suite") != "parity" or leg not in L.QUANTIZED_OF:
            continue
        variant, recipe = L.QUANTIZED_OF[leg]
        if against == L.QUANTIZED_ORACLE_OF.get(recipe):
            found.setdefault((row.get("model"), recipe, variant), []).append(row)
    return {key: _verdict(group, "|leg - oracle|", "checks") for key, group in found.items()}


def quantized_table(rows: list[dict]) -> pd.DataFrame:
    """model x recipe x variant: KL statistics and the recipe's flash-vs-standard status."""
    stats: dict = {}
    for row in rows:
        leg = row.get("legs", "").split("-vs-")[0]
        if row.get("metric") not in STAT_METRICS or leg not in L.QUANTIZED_OF:
            continue
        variant, recipe = L.QUANTIZED_OF[leg]
        record = stats.setdefault((row.get("model"), recipe, variant), {})
        if row["metric"] == FIRST_GREEDY_DIVERGENCE:
            record["first greedy divergence"] = row.get("details", "")
        else:
            record[_STAT_COLUMNS[row["metric"]]] = row.get("value")
    status = _flash_vs_standard(rows)
    oracle_status = _against_quantized_oracle(rows)
    keys = set(stats) | {(model, recipe, "") for model, recipe in status if recipe == "none"}
    records = []
    for model, recipe, variant in sorted(
        keys, key=lambda k: (str(k[0]), _order(k[1]), ("std", "flash", "").index(k[2]))
    ):
        records.append({
            "model": model, "recipe": recipe, "variant": variant or "std and flash",
            **stats.get((model, recipe, variant), {}),
            "flash vs std (same recipe)": status.get((model, recipe), "not measured"),
            "vs quantized oracle": oracle_status.get(
                (model, recipe, variant),
                "not measured" if recipe in L.QUANTIZED_ORACLE_OF else "no quantized oracle",
            ),
        })  # fmt: skip
    return pd.DataFrame(records, columns=COLUMNS)


def _order(recipe: str) -> int:
    recipes = ("none", *L.QUANTIZE_RECIPES)
    return recipes.index(recipe) if recipe in recipes else len(recipes)
