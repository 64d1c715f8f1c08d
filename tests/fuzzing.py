"""Hypothesis profiles shared by the property tests and the schema fuzzing.

``ci`` (the default) keeps ``make test`` short; ``soak`` (``HYPOTHESIS_PROFILE=soak``,
what ``make soak`` sets) runs many more examples. Neither keeps an example database:
CI starts from a fresh clone, and a failure prints the ``@reproduce_failure`` blob.
"""

from __future__ import annotations

import os
from typing import Final

from hypothesis import HealthCheck, settings

PROFILE: Final = os.environ.get("HYPOTHESIS_PROFILE", "ci")

settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "soak",
    max_examples=2000,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(PROFILE)

# Examples per API operation in tests/server/test_schema_fuzz.py.
SCHEMA_EXAMPLES: Final = 250 if PROFILE == "soak" else 25
