"""Files on disk: the run folder, checkpoints, model.safetensors, and their checks."""
