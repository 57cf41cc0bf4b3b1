"""Mutation testing of edge_flash/kernel.py: does the property gate kill each small bug?

``python -m property_tests.mutation`` (``make mutation``) makes every mutant
of the kernel (``mutator``), runs each through the gate in a worker process
(``runner``, ``worker``), and writes reports/mutation.json: the kernel's
sha256, each mutant's status and killing test, and the score. Survivors that
no property can kill are listed with their reasons in
property_tests/equivalent_mutants.toml (``equivalents``).

Why not a maintained tool: mutmut 3.8.1 was tried first (installed apart
from the project's venv). It copies the tree into ``mutants/`` and runs the
suite there through its own trampolines; its clean "stats" run of the gate
failed ``test_keys_and_values_at_masked_positions_have_no_influence``
(error / allowed 1.16, a rounding-level check) that the same suite passes on
the real kernel, so it refused to mutate anything. cosmic-ray rewrites the
source file on disk for each mutant, which this shared working tree forbids
(kernel.py must never change on disk). A small AST mutator fits instead: its
mutants are modules in memory, loaded by the gate through
``--attention-impl`` like any user's kernel.
"""

from property_tests.mutation.equivalents import Equivalent, load_equivalents, stale_entries
from property_tests.mutation.mutator import OPERATORS, Mutant, generate_mutants

__all__ = [
    "OPERATORS",
    "Equivalent",
    "Mutant",
    "generate_mutants",
    "load_equivalents",
    "stale_entries",
]
