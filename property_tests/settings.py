"""Per-test hypothesis settings shared by the property modules.

The profile (dev / ci / thorough, root conftest) sets the example counts; this
only adds one suppressed health check, on top of the profile's own list.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# The ``gate`` fixture is function-scoped because ``record_result`` is; it holds
# no state between examples (each call records its own row), so reusing it
# across a test's examples is what we want, not a leak.
GATE_SETTINGS = settings(
    suppress_health_check=[
        *settings.default.suppress_health_check,
        HealthCheck.function_scoped_fixture,
    ]
)
