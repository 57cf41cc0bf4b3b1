"""Which tests pytest-xdist's ``--dist loadgroup`` (the gate's with ``-n``) keeps together.

loadgroup hands ungrouped tests to the workers one by one, and keeps the tests of
one ``xdist_group`` on one worker: a zoo model's cases (``parity.cases``), whose
session-scoped chain each worker would otherwise build again, and (here) a
module's tests that share a module- or class-scoped fixture, which each worker
running one of them would otherwise set up again (test_xdist's sub-session and
test_litert_standard's plan, a minute or two each).

The controller reads a test's group from an ``@group`` suffix of the node id the
worker reports. Two things lost every group here, silently (the tests were handed
out one by one, and both workers built SmolLM2's chain):

- a worker parses the command line again and never sees the ``--dist loadgroup``
  the root conftest makes of a bare ``-n``, so pytest-xdist's worker does not
  name the groups: the controller tells each worker (``tell_worker_the_schedule``);
- pytest-xdist 3.8 writes the suffix to ``item._nodeid``, which pytest 9.2's
  structured node ids no longer read (pytest-dev/pytest-xdist#1386, open):
  ``name_groups_in_node_ids`` writes it where pytest reads it.
"""

from __future__ import annotations

import pytest

PER_MODULE_SCOPES = ("module", "class", "package")
GROUP_MARK = "xdist_group"
# The key of a worker's ``workerinput`` that says the controller schedules by group.
LOADGROUP_INPUT = "parity_loadgroup"


def tell_worker_the_schedule(node) -> None:
    """On the controller (pytest-xdist's ``pytest_configure_node``): records in the
    worker's input whether the controller's schedule is ``loadgroup``."""
    node.workerinput[LOADGROUP_INPUT] = node.config.getvalue("dist") == "loadgroup"


def scheduled_by_group(config) -> bool:
    """True in a pytest-xdist worker whose controller schedules by ``xdist_group``."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return False  # not a worker: no node ids are sent anywhere
    return bool(workerinput.get(LOADGROUP_INPUT) or getattr(config.option, "loadgroup", False))


def group_tests_sharing_module_fixtures(items: list[pytest.Item]) -> None:
    """Marks each ungrouped test that uses a module-, class- or package-scoped fixture
    with the group of its module's path."""
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        if fixtures is None or item.get_closest_marker(GROUP_MARK) is not None:
            continue
        definitions = (defs[-1] for defs in fixtures.name2fixturedefs.values() if defs)
        if any(definition.scope in PER_MODULE_SCOPES for definition in definitions):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


def group_of(item: pytest.Item) -> str | None:
    """The ``@`` suffix pytest-xdist gives ``item``: its groups' names, sorted, joined by _."""
    names = {
        str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for mark in item.iter_markers(GROUP_MARK)
    }
    return "_".join(sorted(names)) if names else None


def name_groups_in_node_ids(items: list[pytest.Item]) -> None:
    """Gives each grouped test's node id its ``@group`` suffix, unless it has it already
    (pytest before 9.2, where pytest-xdist's own renaming works)."""
    for item in items:
        group = group_of(item)
        if group is None or item.nodeid.endswith(f"@{group}"):
            continue
        renamed = f"{item.nodeid}@{group}"
        if hasattr(item, "_id"):  # pytest >= 9.2: the structured id behind ``nodeid``
            from _pytest.nodeid import NodeId

            item._id = NodeId.parse(renamed)
        else:
            item._nodeid = renamed
        assert item.nodeid == renamed, f"pytest ignored the renaming of {item.nodeid}"
