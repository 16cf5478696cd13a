"""Training a model: preparing and resuming runs, the loop, sizing to a budget, DDP.

How this folder works, top down:
- runs.py turns a user's options into a Run (corpus, tokenizer, size, folder) and trains it;
  resume.py picks a run up from its last.pt instead; held_out.py tokenizes a corpus apart
  from its validation text (--items, --val-file) and lays out an item model's batches.
- loop.py is fit(), read as its parts (_begin, _one_step, _after_step, _summary); the step's
  pure schedule (seed, learning rate, progress, state resets) is in schedule.py, the Run and
  its clock in run.py, a validation and the files it writes in validate.py.
- sizing.py fits a model to a budget; distributed.py is the DDP world and its collectives.
- The library never prints: everything here reports events through a `report` callback.
"""
