"""detcore-transformers: object detectors from Hugging Face transformers as detcore detectors."""

__version__ = "0.1.0"
