"""The kept list of surviving mutants judged equivalent: property_tests/equivalent_mutants.toml.

Each entry names one mutant of edge_flash/kernel.py by its id and repeats
its ``before`` / ``after`` text (so an entry whose line now holds other code
is caught), with the reason no property can kill it::

    [[mutant]]
    id = "L193C32:1->0"
    before = "1"
    after = "0"
    reason = "one more KV block, fully above the diagonal: exp(-inf) adds 0"
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from property_tests.mutation.mutator import Mutant

EQUIVALENTS_PATH = Path(__file__).resolve().parents[1] / "equivalent_mutants.toml"
REFRESH_HINT = (
    "list the current mutants with `python -m property_tests.mutation --list`, then update"
    f" {EQUIVALENTS_PATH.name}: fix each entry's id / before / after to the mutant it meant"
    " (re-checking its reason), or delete it; `make mutation` then re-judges every mutant"
)


@dataclasses.dataclass(frozen=True)
class Equivalent:
    """One entry of the kept file."""

    id: str
    before: str
    after: str
    reason: str


def load_equivalents(path: Path = EQUIVALENTS_PATH) -> list[Equivalent]:
    """The entries of ``path``.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not TOML, or an entry lacks a field or has an empty reason.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from error
    entries = []
    for number, entry in enumerate(data.get("mutant", [])):
        missing = [f for f in ("id", "before", "after", "reason") if not str(entry.get(f, ""))]
        if missing:
            raise ValueError(
                f"{path}: [[mutant]] #{number + 1} ({entry.get('id')!r}) lacks {missing}"
            )
        entries.append(Equivalent(entry["id"], entry["before"], entry["after"], entry["reason"]))
    return entries


def stale_entries(entries: list[Equivalent], mutants: list[Mutant]) -> list[str]:
    """One problem line per entry that matches no mutant of the current kernel (empty if none)."""
    by_id = {mutant.id: mutant for mutant in mutants}
    problems = []
    for entry in entries:
        mutant = by_id.get(entry.id)
        if mutant is None:
            problems.append(f"{entry.id}: no such mutant of the current kernel.py")
        elif (mutant.before, mutant.after) != (entry.before, entry.after):
            problems.append(
                f"{entry.id}: the file says {entry.before!r} -> {entry.after!r}, the kernel now"
                f" gives {mutant.before!r} -> {mutant.after!r}"
            )
    return problems
