"""Fixtures of the end-to-end parity suites: the zoo's chains and the TFLite conversion cache.

- ``--checkpoint-path DIR`` (env ``PARITY_CHECKPOINT_PATH``): a Llama-family
  HF checkpoint (TinyLlama-1.1B-Chat) for the ``user-checkpoint`` zoo entry;
  without it those cases are skipped with a reason saying how to enable them.
- ``chains``: one ``parity.chain.Chain`` per zoo model, built on first use and
  kept for the session, so every leg runs once per prompt however many checks
  read it. The flash legs use the ``--attention-impl`` function.
- ``tflite_store``: converted models, kept across sessions in the checkout's
  ``.cache/tflite`` (``parity.tflite_cache``: ``PARITY_TFLITE_CACHE=DIR`` names
  another directory, ``=session`` asks for a fresh one per session), each file
  keyed by what makes it (model hash, variant, kernel, builder, sizes, the
  sources that build it, the converting packages' versions), so it is converted
  once until one of those changes. pytest-xdist workers share the directory; a
  lock per file makes one of them convert it and the others wait and reuse it.
- ``--model-builder module:function`` (env ``PARITY_MODEL_BUILDER``): the builder
  of the re-authored legs and of the models converted for the TFLite legs
  (``parity.model_builder``); the oracle stays the zoo's.
- ``--tflite PATH`` (env ``PARITY_TFLITE``): a converted file run, unconverted, as
  the ``tflite_flash`` leg of the zoo model it fits (``parity.user_tflite``);
  checked when pytest starts, so a corrupt or mismatched file is one line.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from parity import tflite_cache


def pytest_addoption(parser):
    parser.addoption(
        "--checkpoint-path",
        "--checkpoint_path",  # the seed's spelling; every CLI takes both (edge_flash.cli)
        default=None,
        help=(
            "Llama-family HF checkpoint directory (e.g. TinyLlama-1.1B-Chat-v1.0) for the"
            " user-checkpoint parity cases (env PARITY_CHECKPOINT_PATH)"
        ),
    )
    parser.addoption(
        "--model-builder",
        "--model_builder",
        default=None,
        help=(
            "builder of the re-authored legs, package.module:function taking (checkpoint_path,"
            " kv_cache_max_len) and returning a litert-torch decoder (env PARITY_MODEL_BUILDER;"
            " default: the zoo's builders)"
        ),
    )
    parser.addoption(
        "--tflite",
        default=None,
        help=(
            "a converted .tflite run as the tflite_flash leg of the zoo model it fits, with no"
            " conversion (env PARITY_TFLITE)"
        ),
    )


def pytest_configure(config):
    """Loads --model-builder and opens --tflite before collection: bad input is one line."""
    from parity.model_builder import ModelBuilderError, load_model_builder, model_builder_spec
    from parity.user_tflite import TFLiteFileError, tflite_path

    spec = model_builder_spec(config.getoption("--model-builder"))
    path = tflite_path(config.getoption("--tflite"))
    try:
        config.model_builder = load_model_builder(spec) if spec else None
        config.user_tflite = _user_tflite(path, config) if path else None
    except (ModelBuilderError, TFLiteFileError) as error:
        raise pytest.UsageError(str(error)) from None


def _user_tflite(path: Path, config):
    """(the opened file, the name of the zoo model it fits)."""
    from parity import zoo
    from parity.user_tflite import Architecture, match_model, open_tflite

    user = zoo.user_checkpoint_path(config.getoption("--checkpoint-path"))
    file = open_tflite(path)
    candidates = {}
    for model in zoo.ZOO:
        model_config = zoo.model_config(model, user)
        if model_config is not None:
            sizes = (model.prefill_seq_len, model.kv_cache_max_len)
            candidates[model.name] = (Architecture.of_config(model_config), *sizes)
    return file, match_model(file, candidates)


def pytest_report_header(config):
    lines = []
    if config.model_builder is not None:
        lines.append(f"model builder: {config.model_builder.spec}")
    if config.user_tflite is not None:
        file, model = config.user_tflite
        lines.append(f"tflite: {file.path} as {model}'s tflite_flash leg")
    return lines


@pytest.fixture(scope="session")
def model_builder(pytestconfig):
    """The ``--model-builder`` (a ``parity.model_builder.ModelBuilder``), or None."""
    return pytestconfig.model_builder


@pytest.fixture(scope="session", autouse=True)
def _offline_hub():
    """Nothing is downloaded from a model hub: transformers must read local files only."""
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield
    if previous is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = previous


@pytest.fixture(scope="session")
def tflite_store(
    pytestconfig, tmp_path_factory, attention_impl, attention_impl_spec_str, model_builder
):
    """Converts each (model, variant) at most once per session, across xdist workers too."""
    from parity.chain import TFLiteStore

    directory = _store_directory(pytestconfig, tmp_path_factory)
    return TFLiteStore(directory, attention_impl, attention_impl_spec_str, model_builder)


_STORE_DIRECTORY = pytest.StashKey[Path]()


def _store_directory(config, tmp_path_factory) -> Path:
    """The session's conversion cache directory (made once; the prefetcher's too)."""
    from parity.results_plugin import is_xdist_worker

    if _STORE_DIRECTORY not in config.stash:
        directory = tflite_cache.configured_directory()
        if directory is None and is_xdist_worker(config):
            # A worker's basetemp is <session tmp>/popen-gwN: the parent is the session's,
            # shared by its workers, and the store's lock files make one of them convert.
            directory = tmp_path_factory.getbasetemp().parent / "tflite"
        elif directory is None:
            directory = tmp_path_factory.mktemp("tflite")
        directory.mkdir(parents=True, exist_ok=True)
        config.stash[_STORE_DIRECTORY] = directory
    return config.stash[_STORE_DIRECTORY]


def pytest_sessionstart(session):
    """Shrinks the checkout's conversion cache to its cap, once per session (by the
    controller, not each xdist worker), saying what went (``parity.tflite_cache``)."""
    from parity.results_plugin import is_xdist_worker

    config = session.config
    directory = tflite_cache.configured_directory()
    if is_xdist_worker(config) or directory is None or not tflite_cache.is_default(directory):
        return
    try:
        limit = tflite_cache.max_bytes()
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    removed = tflite_cache.prune(directory, limit) if directory.is_dir() else []
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if removed and reporter is not None:
        reporter.write_line(
            f"conversion cache {directory}: removed {len(removed)} least recently used files"
            f" to stay under {limit / 1e9:g} GB ({tflite_cache.MAX_GB_ENV})"
        )


_PREFETCHER = pytest.StashKey[object]()


def pytest_collection_finish(session):
    """Starts the conversion prefetcher (``parity.prefetch``) for a serial session's TFLite legs."""
    from parity import prefetch
    from parity.results_plugin import is_xdist_worker
    from parity.zoo import USER_CHECKPOINT, user_checkpoint_path

    config = session.config
    under_xdist = is_xdist_worker(config) or getattr(config.option, "numprocesses", None)
    if under_xdist or config.option.collectonly or not prefetch.enabled():
        return
    checkpoint = user_checkpoint_path(config.getoption("--checkpoint-path"))
    skip = [] if config.user_tflite is None else [(config.user_tflite[1], "flash", "none")]
    wanted = [c for c in prefetch.wanted_conversions(session.items, skip)
              if checkpoint is not None or c[0] != USER_CHECKPOINT.name]  # fmt: skip
    if not wanted:
        return
    directory = _store_directory(config, config._tmp_path_factory)
    builder = config.model_builder.spec if config.model_builder is not None else None
    process = prefetch.start(directory, wanted, config.attention_impl_spec, builder, checkpoint)
    config.stash[_PREFETCHER] = process
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"prefetching {len(wanted)} TFLite conversions in process {process.pid}"
            f" (log: {directory / prefetch.LOG_NAME}; {prefetch.PREFETCH_ENV}=0 turns it off)"
        )


def pytest_sessionfinish(session):
    """Stops the prefetcher if it is still converting (nothing the tests need is left)."""
    from parity import prefetch

    process = session.config.stash.get(_PREFETCHER, None)
    if process is not None:
        prefetch.stop(process)


class ChainStore:
    """Session cache of one ``Chain`` per zoo model."""

    def __init__(
        self, work_dir: Path, user_checkpoint, attention_impl, tflite_store, model_builder=None,
        user_tflite=None,
    ):  # fmt: skip
        self.work_dir = work_dir
        self.user_checkpoint = user_checkpoint
        self.attention_impl = attention_impl
        self.tflite_store = tflite_store
        self.model_builder = model_builder
        self.user_tflite = user_tflite  # (TFLiteFile, zoo model name) or None
        self._chains = {}

    def get(self, model):
        """The chain of zoo entry ``model``; skips ``user-checkpoint`` without a checkpoint."""
        from parity.chain import Chain
        from parity.zoo import HOW_TO_ENABLE_USER_CHECKPOINT, USER_CHECKPOINT, prepare

        if model.name == USER_CHECKPOINT.name and self.user_checkpoint is None:
            pytest.skip(HOW_TO_ENABLE_USER_CHECKPOINT)
        if model.name not in self._chains:
            prepared = prepare(model, self.work_dir, self.user_checkpoint)
            self._chains[model.name] = Chain(
                prepared,
                self.attention_impl,
                self.tflite_store,
                factories=self._user_legs(model.name),
                model_builder=self.model_builder,
            )
        return self._chains[model.name]

    def _user_legs(self, model_name: str) -> dict:
        """The user's .tflite as the tflite_flash leg (and, if it has the chunk
        signatures, the tflite_flash_chunked leg) of the model it fits."""
        from parity import legs as L
        from parity.chunked import ChunkedTFLiteLeg
        from parity.zoo import zoo_model

        if self.user_tflite is None or self.user_tflite[1] != model_name:
            return {}
        path = self.user_tflite[0].path
        model = zoo_model(model_name)

        def chunked():
            leg = ChunkedTFLiteLeg(path, L.TFLITE_FLASH_CHUNKED, model.chunk_seq_lens)
            missing = sorted(set(model.chunk_seq_lens) - set(leg.runner.prefill_signatures))
            if missing:
                lengths = " ".join(map(str, sorted({model.prefill_seq_len, *model.chunk_seq_lens})))
                pytest.skip(
                    f"--tflite {path} has no prefill signatures {missing} for chunked prefill;"
                    f" convert it with --prefill_seq_lens {lengths} to run this case"
                )
            return leg

        return {
            L.TFLITE_FLASH: lambda: L.TFLiteLeg(path, L.TFLITE_FLASH),
            L.TFLITE_FLASH_CHUNKED: chunked,
        }


@pytest.fixture(scope="session")
def chains(pytestconfig, tmp_path_factory, attention_impl, tflite_store, model_builder):
    """``chains.get(zoo_model)``: the session's chain of that model."""
    from parity.zoo import user_checkpoint_path

    user = user_checkpoint_path(pytestconfig.getoption("--checkpoint-path"))
    return ChainStore(
        tmp_path_factory.mktemp("zoo"), user, attention_impl, tflite_store, model_builder,
        pytestconfig.user_tflite,
    )  # fmt: skip


@pytest.fixture(scope="session")
def judge(pytestconfig, attention_impl_spec_str):
    """The checks' defaults, with a reproduce line naming the kernel, builder and file under test."""
    from parity.checks import Judge

    command = f"pytest parity -k '{{case_id}}' --attention-impl {attention_impl_spec_str}"
    if pytestconfig.model_builder is not None:
        command += f" --model-builder {pytestconfig.model_builder.spec}"
    if pytestconfig.user_tflite is not None:
        command += f" --tflite {pytestconfig.user_tflite[0].path}"
    return Judge(reproduce=command)


@pytest.fixture(scope="session")
def tiny_flash_tflite(tmp_path_factory) -> dict:
    """{checkpoint, file}: the tiny zoo model written as a user's checkpoint and converted
    with flash attention at the zoo's sizes by ``python -m edge_flash.convert``, once per
    session (the user-file and TFLite-localisation suites both start from it)."""
    from parity.test_user_tflite import TINY_SIZES, _convert
    from parity.zoo import write_tiny_random_llama

    work = tmp_path_factory.mktemp("tiny-flash-tflite")
    checkpoint = write_tiny_random_llama(work / "tiny")
    file = _convert(checkpoint, work / "out", "--use_flash_attention=true", *TINY_SIZES)
    return {"checkpoint": checkpoint, "file": file}
