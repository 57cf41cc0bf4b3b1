"""The command-line tools' shared conventions (``edge_flash.cli``): spellings, help, exit 2.

Every CLI module exposes ``build_parser()``; these tests walk each parser so a
flag added without help text or without its other spelling fails here.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from edge_flash import cli

# CLI name (as run with python -m) -> the module holding its build_parser.
PARSERS = {
    "parity.verify": "parity.verify",
    "edge_flash.convert": "edge_flash.convert",
    "parity.golden": "parity.golden",
    "parity.chain": "parity.chain",
    "parity.bench": "parity.bench.__main__",
    "parity.report": "parity.report.__main__",
    "parity.false_alarms": "parity.false_alarms",
    "parity.detection_limits": "parity.detection_limits",
    "parity.prefetch": "parity.prefetch",
}
ROOT = Path(__file__).resolve().parents[1]


def build(name: str):
    return importlib.import_module(PARSERS[name]).build_parser()


@pytest.mark.quick
@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_flag_of_the_cli_has_help_text(name):
    """Each action of the CLI's parser has non-empty help."""
    missing = [a.option_strings for a in build(name)._actions if not (a.help or "").strip()]
    assert missing == []


@pytest.mark.quick
@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_multi_word_flag_takes_both_spellings(name):
    """--a_b and --a-b are one option in every CLI, whichever the code wrote."""
    for action in build(name)._actions:
        for flag in action.option_strings:
            if flag.startswith("--"):
                assert set(cli.spellings([flag])) <= set(action.option_strings), action


@pytest.mark.quick
def test_seed_and_dashed_spellings_parse_to_the_same_values():
    """verify and convert: the seed's underscore flags and the dashed ones give equal args."""
    seed = ["--checkpoint_path", "ckpt", "--max_new_tokens", "3", "--use_flash_attention"]
    dashed = ["--checkpoint-path", "ckpt", "--max-new-tokens", "3", "--use-flash-attention"]
    parser = build("parity.verify")
    assert parser.parse_args(seed) == parser.parse_args(dashed)
    seed = ["--kv_cache_max_len", "64", "--prefill_seq_lens", "8", "16", "--output_path", "o"]
    parser = build("edge_flash.convert")
    assert parser.parse_args(seed) == parser.parse_args([f.replace("_", "-") for f in seed])


@pytest.mark.quick
def test_abbreviated_flag_is_refused_in_one_line(capsys):
    """--checkpoint (a prefix of both spellings) exits 2 naming it; no usage dump."""
    with pytest.raises(SystemExit) as raised:
        build("parity.verify").parse_args(["--checkpoint", "x"])
    err = capsys.readouterr().err
    assert raised.value.code == cli.EXIT_UNUSABLE and err.count("\n") == 1 and "--checkpoint" in err


@pytest.mark.quick
def test_spellings_adds_the_other_form_once():
    """spellings keeps order, adds each missing form, and leaves short and one-word flags."""
    assert cli.spellings(["--model-builder", "--model_builder"]) == ["--model-builder", "--model_builder"]
    assert cli.spellings(["-v", "--verbose"]) == ["-v", "--verbose"]
    assert cli.spellings(["--kv_cache_max_len"]) == ["--kv_cache_max_len", "--kv-cache-max-len"]


def test_pytest_options_take_the_underscore_spelling():
    """pytest accepts --checkpoint_path, --model_builder and --attention_impl (collection only)."""
    argv = [sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider",
            "--checkpoint_path=", "--model_builder=", "--attention_impl=edge_flash:flash_attention",
            str(ROOT / "parity" / "test_cli.py"), "-k", "spellings_adds"]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "1 test collected" in done.stdout or "1/" in done.stdout, done.stdout[-2000:]
