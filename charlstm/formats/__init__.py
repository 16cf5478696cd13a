"""Files on disk: the run folder, checkpoints, model.safetensors, and their checks.

How this folder works:
- run_folder.py owns the names of a run's files (RunFolder: best, last, model_file, metrics,
  tokens, keep, summary, lock; checkpoint() resolves best → last → model file). No other
  module spells a run file's name.
- checks.py is what every reader checks before building anything (torch-free); checkpoint.py
  (best.pt, last.pt) and model_file.py (model.safetensors) read and write on top of it.
- A new file kind: its reader here, its name in run_folder.py.
"""
