"""Generating text: the torch and numpy engines, the choice rule, the sampling loop."""
