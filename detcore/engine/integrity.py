"""Moved to :mod:`detcore.integrity` (reading a checkpoint file verifies it,
and the one reader, :mod:`detcore.weights`, sits below the engine); the
names stay importable from here."""

from detcore.integrity import KEY, payload_digest, seal, verify  # noqa: F401

__all__ = ["KEY", "payload_digest", "seal", "verify"]
