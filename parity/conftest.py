"""Fixtures of the end-to-end parity suites: the zoo's chains and the TFLite conversion cache.

- ``--checkpoint-path DIR`` (env ``PARITY_CHECKPOINT_PATH``): a Llama-family
  HF checkpoint (TinyLlama-1.1B-Chat) for the ``user-checkpoint`` zoo entry;
  without it those cases are skipped with a reason saying how to enable them.
- ``chains``: one ``parity.chain.Chain`` per zoo model, built on first use and
  kept for the session, so every leg runs once per prompt however many checks
  read it. The flash legs use the ``--attention-impl`` function.
- ``tflite_store``: converted models, each converted once per session under a
  session tmp dir, or under ``PARITY_TFLITE_CACHE`` to keep them across
  sessions (keyed by model hash, variant, kernel, sizes and edge_flash's sources).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TFLITE_CACHE_ENV = "PARITY_TFLITE_CACHE"


def pytest_addoption(parser):
    parser.addoption(
        "--checkpoint-path",
        default=None,
        help=(
            "Llama-family HF checkpoint directory (e.g. TinyLlama-1.1B-Chat-v1.0) for the"
            " user-checkpoint parity cases (env PARITY_CHECKPOINT_PATH)"
        ),
    )


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
def tflite_store(tmp_path_factory, attention_impl, attention_impl_spec_str):
    """Converts each (model, variant) at most once per session."""
    from parity.chain import TFLiteStore

    cache = os.environ.get(TFLITE_CACHE_ENV)
    directory = Path(cache).expanduser() if cache else tmp_path_factory.mktemp("tflite")
    directory.mkdir(parents=True, exist_ok=True)
    return TFLiteStore(directory, attention_impl, attention_impl_spec_str)


class ChainStore:
    """Session cache of one ``Chain`` per zoo model."""

    def __init__(self, work_dir: Path, user_checkpoint, attention_impl, tflite_store):
        self.work_dir = work_dir
        self.user_checkpoint = user_checkpoint
        self.attention_impl = attention_impl
        self.tflite_store = tflite_store
        self._chains = {}

    def get(self, model):
        """The chain of zoo entry ``model``; skips ``user-checkpoint`` without a checkpoint."""
        from parity.chain import Chain
        from parity.zoo import HOW_TO_ENABLE_USER_CHECKPOINT, USER_CHECKPOINT, prepare

        if model.name == USER_CHECKPOINT.name and self.user_checkpoint is None:
            pytest.skip(HOW_TO_ENABLE_USER_CHECKPOINT)
        if model.name not in self._chains:
            prepared = prepare(model, self.work_dir, self.user_checkpoint)
            self._chains[model.name] = Chain(prepared, self.attention_impl, self.tflite_store)
        return self._chains[model.name]


@pytest.fixture(scope="session")
def chains(pytestconfig, tmp_path_factory, attention_impl, tflite_store):
    """``chains.get(zoo_model)``: the session's chain of that model."""
    from parity.zoo import user_checkpoint_path

    user = user_checkpoint_path(pytestconfig.getoption("--checkpoint-path"))
    return ChainStore(tmp_path_factory.mktemp("zoo"), user, attention_impl, tflite_store)


@pytest.fixture(scope="session")
def judge(attention_impl_spec_str):
    """The checks' defaults, with a reproduce line that names the kernel under test."""
    from parity.checks import Judge

    return Judge(
        reproduce=f"pytest parity -k '{{case_id}}' --attention-impl {attention_impl_spec_str}"
    )
