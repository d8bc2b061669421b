"""The training engine: building, the runner, checkpoints, logging, distribution."""
