"""The training engine: model loading, the loop, checkpoints."""
