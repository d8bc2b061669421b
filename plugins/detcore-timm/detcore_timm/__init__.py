"""detcore-timm: every timm backbone with ``features_only`` support as a detcore backbone."""

__version__ = "0.1.0"
