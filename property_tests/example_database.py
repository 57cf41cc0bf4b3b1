"""The kept Hypothesis example database: failures the gate found, replayed first next run.

The ci and thorough profiles (root conftest) save every failing example they
find, after shrinking, to a directory database, ``.hypothesis/examples`` under
the project root unless ``PARITY_HYPOTHESIS_DB`` names another directory
(``none`` turns it off). The next run of the same property on the same
``--attention-impl`` replays those examples before it generates any
(hypothesis's reuse phase), so a bug found once is retried first until it is
fixed; an example that no longer fails is deleted from the database.

Two choices keep the gate's result a function of the code and the database:

- ``FailuresDatabase`` (property_tests/failures_database.py) keeps failures only. Hypothesis would also keep a
  ``.pareto`` corpus (the best examples of ``target()``, which the gate uses)
  and a ``.secondary`` one, and replay them: a passing run would then change
  the next run's examples. Keys are scoped by the attention impl, so a failure
  of a seeded broken kernel (the teeth test) is never replayed on another kernel.
- Hypothesis forbids ``derandomize=True`` with a database. The ci profile so
  sets no ``derandomize`` but seeds each test, when it runs, with the seed
  ``derandomize`` would give it (``derandomized_seed``). A ci run is then a
  function of the code and the kept examples. Its examples are not those of a
  database-free derandomized run: with a database hypothesis keeps a pareto
  front of ``target()`` results, which draws from the same random stream.
"""

from __future__ import annotations

# No hypothesis import here: the gate's runners import this before pytest.main,
# and a hypothesis imported before pytest cannot be assertion-rewritten (an error
# under this project's filterwarnings). The database is property_tests.failures_database.
import os
from pathlib import Path

EXAMPLE_DB_ENV = "PARITY_HYPOTHESIS_DB"
DEFAULT_EXAMPLE_DB = Path(".hypothesis") / "examples"
_OFF = "none"


def example_database_directory(root: Path, environ: dict | None = None) -> Path | None:
    """Where failures are kept: ``$PARITY_HYPOTHESIS_DB`` (``none``: nowhere), else under ``root``."""
    environ = os.environ if environ is None else environ
    chosen = environ.get(EXAMPLE_DB_ENV, "").strip()
    if chosen.lower() == _OFF:
        return None
    return Path(chosen).expanduser() if chosen else Path(root) / DEFAULT_EXAMPLE_DB
