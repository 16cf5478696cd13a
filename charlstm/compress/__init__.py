"""Lossless compression with a model: the .clz format and the integer-exact engine.

format.py is the file (its header, checked before anything is allocated, and the segment
layout); codec.py codes text with a range coder driven by exact.py, the integer-exact model
whose probabilities are the same on every machine, thread count and engine.
"""
