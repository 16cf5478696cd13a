"""Lossless compression with a model: the .clz format and the integer-exact engine."""
