"""Training a model: preparing and resuming runs, the loop, sizing to a budget, DDP."""
