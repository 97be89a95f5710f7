"""The test suite's settings: the server's, with a fixed key and background features off.

pytest-django loads this module (pyproject's ``DJANGO_SETTINGS_MODULE``); child processes
that tests start choose their own settings module and environment. Features a server
turns on by default and tests must not run in the background are switched off here, not
detected by production code.
"""

from __future__ import annotations

from dashboard.settings import *  # noqa: F403

SECRET_KEY = "tests-only-secret-key-never-used-in-production-0123456789abcdef"
ALERTS_ENABLED = False  # tests run the evaluator themselves (Runner.run_once)
