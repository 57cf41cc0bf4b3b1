"""The database of the kept failures, and derandomize's seed (see property_tests/example_database.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase
from hypothesis.internal.compat import int_from_bytes
from hypothesis.internal.reflection import function_digest

# Sub-keys of a test's key (hypothesis.internal.conjecture.engine) that hold
# examples that are not failures: never kept, never replayed.
_CORPUS_SUFFIXES = (b".secondary", b".pareto")


class FailuresDatabase(ExampleDatabase):
    """A directory database of failing examples, keyed per (attention impl, test).

    ``scope`` is the attention impl's spec: a failure found on one kernel is
    replayed on that kernel only. Safe to share between processes (pytest-xdist
    workers, CI jobs): each example is its own file.
    """

    def __init__(self, directory: Path, scope: str):
        super().__init__()
        self.directory = Path(directory)
        self.scope = scope
        self._store = DirectoryBasedExampleDatabase(str(self.directory))
        self._prefix = hashlib.sha256(scope.encode()).hexdigest()[:16].encode() + b":"

    def __repr__(self) -> str:
        return f"FailuresDatabase({str(self.directory)!r}, scope={self.scope!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FailuresDatabase) and (self.directory, self.scope) == (
            other.directory,
            other.scope,
        )

    def __hash__(self) -> int:
        return hash((self.directory, self.scope))

    def _scoped(self, key: bytes) -> bytes:
        return self._prefix + key

    def save(self, key: bytes, value: bytes) -> None:
        if not key.endswith(_CORPUS_SUFFIXES):
            self._store.save(self._scoped(key), value)

    def fetch(self, key: bytes) -> Iterable[bytes]:
        if key.endswith(_CORPUS_SUFFIXES):
            return iter(())
        return self._store.fetch(self._scoped(key))

    def delete(self, key: bytes, value: bytes) -> None:
        self._store.delete(self._scoped(key), value)

    def move(self, src: bytes, dest: bytes, value: bytes) -> None:
        # A failure hypothesis demotes to the secondary corpus is simply dropped.
        self.delete(src, value)
        self.save(dest, value)

    def kept_count(self) -> int:
        """How many failing examples the directory keeps, of every scope and test."""
        if not self.directory.is_dir():
            return 0
        index = DirectoryBasedExampleDatabase._metakeys_hash  # its index of keys, not examples
        return sum(
            1
            for key in self.directory.iterdir()
            if key.is_dir() and key.name != index
            for example in key.iterdir()
            if example.is_file()
        )


def derandomized_seed(wrapped_test) -> int:
    """The seed ``derandomize=True`` gives this hypothesis test (``hypothesis.core``).

    Computed when the test runs: for a parametrized test hypothesis's pytest
    plugin adds the node id to the test's digest just before the call.
    """
    return int_from_bytes(function_digest(wrapped_test.hypothesis.inner_test))
