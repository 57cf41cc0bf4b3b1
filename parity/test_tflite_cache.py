"""The conversion cache kept across sessions: where it is, what its keys cover, how it stays bounded."""

from __future__ import annotations

import os
import types
from pathlib import Path

import pytest

from parity import chain, tflite_cache
from parity.chain import TFLiteStore
from parity.file_lock import exclusive_lock


def test_the_default_is_the_checkouts_cache_and_session_asks_for_none(monkeypatch, tmp_path):
    """Unset: <checkout>/.cache/tflite (git ignores .cache/); DIR: DIR; "session": None."""
    monkeypatch.delenv(tflite_cache.CACHE_ENV, raising=False)
    default = tflite_cache.configured_directory()
    assert default == Path(chain.__file__).resolve().parent.parent / ".cache" / "tflite"
    assert tflite_cache.is_default(default) and tflite_cache.explicit_directory() is None
    assert ".cache/" in (default.parent.parent / ".gitignore").read_text().splitlines()
    monkeypatch.setenv(tflite_cache.CACHE_ENV, str(tmp_path))
    assert tflite_cache.configured_directory() == tmp_path == tflite_cache.explicit_directory()
    assert not tflite_cache.is_default(tmp_path)
    monkeypatch.setenv(tflite_cache.CACHE_ENV, "session")
    assert tflite_cache.configured_directory() is None is tflite_cache.explicit_directory()


def _files(directory: Path, sizes_and_ages: dict[str, tuple[int, int]]) -> dict[str, Path]:
    """Writes ``name -> (bytes, seconds since last use)`` as .tflite files with those mtimes."""
    paths = {}
    for name, (size, age) in sizes_and_ages.items():
        path = directory / f"{name}.tflite"
        path.write_bytes(b"x" * size)
        used = path.stat().st_mtime - age
        os.utime(path, (used, used))
        paths[name] = path
    return paths


def test_prune_removes_the_least_recently_used_files_until_the_rest_fit(tmp_path):
    """400 bytes against a cap of 250: the two oldest go (oldest first), with a .corrupt copy."""
    paths = _files(tmp_path, {"old": (100, 300), "older": (100, 400), "new": (100, 10),
                              "newer": (100, 0)})  # fmt: skip
    (tmp_path / "older.tflite.corrupt").write_bytes(b"garbage")
    removed = tflite_cache.prune(tmp_path, 250)
    assert removed == [paths["older"], paths["old"]]
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert left == ["new.tflite", "newer.tflite"]  # the empty lock files stay (see prune)
    assert tflite_cache.prune(tmp_path, 250) == []  # under the cap: nothing more goes


def test_prune_leaves_a_file_whose_lock_another_holder_has(tmp_path):
    """The oldest file's lock is held (a session converting or checking it): the next goes instead."""
    paths = _files(tmp_path, {"busy": (100, 500), "idle": (100, 400), "new": (100, 0)})
    with exclusive_lock(TFLiteStore.lock_path(paths["busy"])):
        assert tflite_cache.prune(tmp_path, 200) == [paths["idle"]]
    assert paths["busy"].is_file() and TFLiteStore.lock_path(paths["busy"]).is_file()


@pytest.mark.parametrize("value", ["0", "-1", "three", "nan"])
def test_a_cap_that_is_not_a_positive_number_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv(tflite_cache.MAX_GB_ENV, value)
    with pytest.raises(ValueError, match=f"PARITY_TFLITE_CACHE_MAX_GB={value!r}: give a positive"):
        tflite_cache.max_bytes()


def test_the_cap_defaults_to_6_gb_and_reads_fractions(monkeypatch):
    monkeypatch.delenv(tflite_cache.MAX_GB_ENV, raising=False)
    assert tflite_cache.max_bytes() == 6_000_000_000
    monkeypatch.setenv(tflite_cache.MAX_GB_ENV, "0.5")
    assert tflite_cache.max_bytes() == 500_000_000


def _prepared():
    """The parts of a PreparedModel that ``TFLiteStore._key`` reads."""
    zoo = types.SimpleNamespace(name="tiny", kernel_options={}, prefill_seq_len=8,
                                kv_cache_max_len=16, chunk_seq_lens=())  # fmt: skip
    return types.SimpleNamespace(zoo=zoo, model_hash="0123456789abcdef")


def test_a_file_name_changes_with_the_converting_packages_versions(monkeypatch, tmp_path):
    """A kept file made by another torch or litert-torch is not reused: its key differs."""
    import edge_flash

    store = TFLiteStore(tmp_path, edge_flash.flash_attention, "edge_flash:flash_attention")
    before = store.target(_prepared(), "flash")
    versions = chain._converter_versions()
    assert all(f"{package}=" in versions for package in chain.CONVERTER_PACKAGES)
    monkeypatch.setattr(chain, "_converter_versions", lambda: versions + " torch=9.9")
    assert store.target(_prepared(), "flash") != before


def test_a_reused_file_is_marked_used_so_pruning_keeps_it(monkeypatch, tmp_path):
    """Reuse refreshes the file's mtime, the recency ``prune`` evicts by."""
    store = TFLiteStore(tmp_path, None, "x:y")
    monkeypatch.setattr(store, "_key", lambda prepared, variant, quantize: "key")
    monkeypatch.setattr(chain, "tflite_problem", lambda path: None)
    (target,) = _files(tmp_path, {"tiny-std-key": (10, 3600)}).values()
    stale = target.stat().st_mtime
    assert store.path(_prepared(), "std") == target
    assert target.stat().st_mtime > stale + 3000


class _Reporter:
    def __init__(self):
        self.lines = []

    def write_line(self, line):
        self.lines.append(line)


def _session(worker: bool):
    """What ``pytest_sessionstart`` reads of a session: its config, a controller's or a worker's."""
    reporter = _Reporter()
    config = types.SimpleNamespace(
        pluginmanager=types.SimpleNamespace(get_plugin=lambda name: reporter)
    )
    if worker:
        config.workerinput = {}
    return types.SimpleNamespace(config=config), reporter


def test_a_session_prunes_the_default_cache_once_by_its_controller(monkeypatch, tmp_path):
    """The controller prunes to PARITY_TFLITE_CACHE_MAX_GB and says so; a worker prunes nothing."""
    from parity.conftest import pytest_sessionstart

    monkeypatch.setattr(tflite_cache, "DEFAULT_DIRECTORY", tmp_path)
    monkeypatch.delenv(tflite_cache.CACHE_ENV, raising=False)
    monkeypatch.setenv(tflite_cache.MAX_GB_ENV, "1e-7")  # 100 bytes
    paths = _files(tmp_path, {"old": (100, 60), "new": (100, 0)})
    session, reporter = _session(worker=True)
    pytest_sessionstart(session)
    assert paths["old"].is_file() and reporter.lines == []
    session, reporter = _session(worker=False)
    pytest_sessionstart(session)
    assert not paths["old"].is_file() and paths["new"].is_file()
    assert reporter.lines == [f"conversion cache {tmp_path}: removed 1 least recently used"
                              " files to stay under 1e-07 GB (PARITY_TFLITE_CACHE_MAX_GB)"]  # fmt: skip


def test_a_directory_the_user_names_is_never_pruned(monkeypatch, tmp_path):
    from parity.conftest import pytest_sessionstart

    monkeypatch.setenv(tflite_cache.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv(tflite_cache.MAX_GB_ENV, "1e-9")
    paths = _files(tmp_path, {"old": (100, 60), "new": (100, 0)})
    pytest_sessionstart(_session(worker=False)[0])
    assert all(path.is_file() for path in paths.values())
