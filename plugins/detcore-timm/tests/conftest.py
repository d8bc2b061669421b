"""Makes detcore.testing's ``detcore_tester`` fixture available to these tests."""

from detcore.testing import detcore_tester  # noqa: F401
