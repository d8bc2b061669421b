"""Data pipeline: transforms, dataset wrappers, samplers and loaders."""
