"""README.md against the code: every env var and CLI flag documented, the pipeline example runs.

The README is the user's manual; these tests keep it from drifting: a new
environment variable or flag fails here until it is documented, and the
seed's pipeline example is executed exactly as written.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from parity.test_cli import PARSERS, build

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# Environment variables are named where they are defined (NAME_ENV = "...") or read
# (os.environ.get("..."), os.environ["..."]).
_ENV_NAME = re.compile(
    r"""(?:_ENV\s*=\s*\{?\s*|os\.environ(?:\.get|\.setdefault)?\(\s*|os\.environ\[\s*)"([A-Z][A-Z0-9_]*)\""""
)
_PYTEST_OPTION = re.compile(r"""addoption\(\s*"(--[\w-]+)\"""")
_EXAMPLE = re.compile(r"<!-- example: pipeline -->\n```python\n(.*?)\n```", re.DOTALL)


def _documented(flag: str) -> bool:
    return re.search(re.escape(flag) + r"(?![\w-])", README) is not None


def _code_files():
    for folder in ("edge_flash", "parity", "property_tests"):
        yield from (ROOT / folder).rglob("*.py")
    yield ROOT / "conftest.py"


def test_every_environment_variable_in_the_code_is_in_the_readme():
    """Each env var the code defines or reads is named in README.md."""
    names = {name for path in _code_files() for name in _ENV_NAME.findall(path.read_text())}
    assert {"PARITY_RESULTS", "EDGE_FLASH_CACHE", "PARITY_TORCH_THREADS"} <= names  # the scan works
    assert sorted(name for name in names if f"`{name}`" not in README) == []


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_flag_of_the_cli_is_in_the_readme(name):
    """Each option of the CLI (the spelling --help shows first) is named in README.md."""
    flags = [a.option_strings[0] for a in build(name)._actions if a.option_strings[0] != "-h"]
    assert [flag for flag in flags if not _documented(flag)] == []
    assert _documented(f"python -m {name}")


def test_every_pytest_option_is_in_the_readme():
    """The conftest options (--attention-impl, --checkpoint-path, ...) are named in README.md."""
    text = (ROOT / "conftest.py").read_text() + (ROOT / "parity" / "conftest.py").read_text()
    options = _PYTEST_OPTION.findall(text)
    assert {"--attention-impl", "--checkpoint-path", "--model-builder", "--tflite"} <= set(options)
    assert [option for option in options if not _documented(option)] == []


# Measured 40-70 s on the shared 2-core machine (SmolLM2 build + 5 forward calls;
# the first run also dequantizes the GGUF), hence slow.
@pytest.mark.slow
def test_readme_pipeline_example_runs_and_matches_torch_runner():
    """The README's SmolLM2 pipeline block runs as written; its tokens are TorchRunner's."""
    import edge_flash

    (source,) = _EXAMPLE.findall(README)
    namespace: dict = {"__name__": "readme_example"}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(source, "README.md:pipeline", "exec"), namespace)  # noqa: S102 - our README
    generated = namespace["generated"]
    assert len(generated) == 5 and all(0 <= t < namespace["model"].config.vocab_size for t in generated)
    runner = edge_flash.TorchRunner(namespace["model"], namespace["kv_cache_max_len"])
    assert runner.generate(namespace["prompt_ids"], 5) == generated
    assert str(generated) in printed.getvalue()
