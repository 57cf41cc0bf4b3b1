"""The chain's TFLite conversion cache: a corrupt cached file is moved aside and converted again."""

from __future__ import annotations

import types

import pytest
import torch

from parity.chain import TFLiteStore, tflite_problem


@pytest.fixture(scope="module")
def small_tflite(tmp_path_factory):
    """A real .tflite (a 2x2 linear layer; seconds to convert)."""
    import litert_torch

    path = tmp_path_factory.mktemp("tflite") / "linear.tflite"
    torch.manual_seed(0)
    litert_torch.convert(torch.nn.Linear(2, 2).eval(), (torch.zeros(1, 2),)).export(str(path))
    return path


def test_a_real_tflite_file_has_no_problem(small_tflite):
    """A file LiteRT opens is usable: tflite_problem returns None."""
    assert tflite_problem(small_tflite) is None


def test_garbage_and_a_cut_file_are_each_named_as_unusable(small_tflite, tmp_path):
    """Not TFLite at all: the identifier is named; cut in half: LiteRT's verifier refuses it."""
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"<html>proxy error</html>")
    assert "not the TFLite identifier b'TFL3'" in tflite_problem(garbage)
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(small_tflite.read_bytes()[: small_tflite.stat().st_size // 2])
    assert tflite_problem(cut).startswith("LiteRT cannot open it:")


def _store(tmp_path, real_file):
    """A store whose conversion copies ``real_file`` and counts calls (no model is built)."""
    store = TFLiteStore(tmp_path, attention_impl=None, attention_impl_spec="x:y")
    store._key = lambda prepared, variant, quantize: "key"
    store.converted = 0

    def convert(prepared, variant, quantize, target):
        store.converted += 1
        target.write_bytes(real_file.read_bytes())

    store._convert = convert
    return store


def test_a_garbage_file_at_the_cache_path_is_moved_aside_and_converted_again(
    small_tflite, tmp_path, capsys
):
    """Planted garbage: kept as .corrupt, converted again, one stderr line; a good file is reused."""
    store = _store(tmp_path, small_tflite)
    prepared = types.SimpleNamespace(zoo=types.SimpleNamespace(name="tiny"))
    target = tmp_path / "tiny-std-key.tflite"
    target.write_bytes(b"garbage")
    assert store.path(prepared, "std") == target and store.converted == 1
    assert tflite_problem(target) is None
    assert (tmp_path / "tiny-std-key.tflite.corrupt").read_bytes() == b"garbage"
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"parity.chain: cached {target} is unusable (bytes 4..8 are")
    assert line.endswith("moved to tiny-std-key.tflite.corrupt, converting again")
    assert TFLiteStore.path(_store(tmp_path, small_tflite), prepared, "std") == target
    assert store.converted == 1  # the good file is reused by a new store, not converted


def test_two_stores_sharing_a_directory_convert_a_file_once(small_tflite, tmp_path):
    """Two stores (as two xdist workers) asking at once: one converts, the other waits and reuses."""
    import threading
    import time

    calls = []

    def slow_store():
        store = _store(tmp_path, small_tflite)
        original = store._convert

        def convert(prepared, variant, quantize, target):
            calls.append(variant)
            time.sleep(0.5)  # long enough for the other thread to ask meanwhile
            original(prepared, variant, quantize, target)

        store._convert = convert
        return store

    prepared = types.SimpleNamespace(zoo=types.SimpleNamespace(name="tiny"))
    paths = []
    threads = [
        threading.Thread(target=lambda: paths.append(slow_store().path(prepared, "std")))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["std"], "the shared file was converted more than once"
    assert paths == [tmp_path / "tiny-std-key.tflite"] * 2
    assert tflite_problem(paths[0]) is None


def test_a_quantized_file_is_named_after_its_recipe_and_an_unknown_recipe_is_refused(
    small_tflite, tmp_path
):
    """``path(..., quantize)`` keeps each recipe's file apart; a bad recipe name is refused."""
    store = _store(tmp_path, small_tflite)
    prepared = types.SimpleNamespace(zoo=types.SimpleNamespace(name="tiny"))
    assert store.path(prepared, "flash", "fp16") == tmp_path / "tiny-flash-fp16-key.tflite"
    assert store.path(prepared, "flash") == tmp_path / "tiny-flash-key.tflite"
    with pytest.raises(ValueError, match=r"quantize \('int3'\) must be one of \('none', "):
        store.path(prepared, "std", "int3")
