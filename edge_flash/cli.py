"""One argparse parser for every command-line tool of edge_flash and parity.

``ArgumentParser`` registers both spellings of every multi-word long option
(``--checkpoint_path`` and ``--checkpoint-path``; the name written first keeps
the ``dest`` and leads in ``--help``), so the seed's underscore flags and the
dashed style both work in every tool. It reports a bad flag in one line (no
usage dump) and exits 2, the status every tool uses for unusable input:

- 0: every check passed (or the tool did its job);
- 1: a check failed;
- 2: unusable input (bad flag or value, missing or corrupt file).

Abbreviated flags are refused (``allow_abbrev=False``): with two spellings per
option, a prefix such as ``--checkpoint`` would match both and argparse would
call it ambiguous; and an abbreviation silently changes meaning when a flag is
added later.
"""

from __future__ import annotations

import argparse
from typing import Sequence

EXIT_OK, EXIT_FAILED, EXIT_UNUSABLE = 0, 1, 2


def spellings(names: Sequence[str]) -> list[str]:
    """``names`` with the other spelling of each multi-word long option after it.

    >>> spellings(["--checkpoint_path"])
    ['--checkpoint_path', '--checkpoint-path']
    """
    out: list[str] = []
    for name in names:
        candidates = [name]
        if name.startswith("--"):
            word = name[2:]
            candidates += ["--" + word.replace("_", "-"), "--" + word.replace("-", "_")]
        out += [c for i, c in enumerate(candidates) if c not in out + candidates[:i]]
    return out


def _both_spellings(add_argument):
    def add(*names, **kwargs):
        return add_argument(*spellings(names), **kwargs)

    return add


class ArgumentParser(argparse.ArgumentParser):
    """argparse with both spellings of every option, no abbreviations, one-line errors (exit 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def add_argument(self, *names, **kwargs):
        return super().add_argument(*spellings(names), **kwargs)

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        group.add_argument = _both_spellings(group.add_argument)
        return group

    def add_mutually_exclusive_group(self, **kwargs):
        group = super().add_mutually_exclusive_group(**kwargs)
        group.add_argument = _both_spellings(group.add_argument)
        return group

    def error(self, message):
        self.exit(EXIT_UNUSABLE, f"{self.prog}: error: {message}\n")


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every long option string of ``parser`` (for tests and docs), ``--help`` excluded."""
    return [
        name
        for action in parser._actions  # argparse has no public list of its actions
        for name in action.option_strings
        if name.startswith("--") and name != "--help"
    ]
