"""detcore-example: the worked example of a detcore plugin distribution."""

__version__ = "0.1.0"
