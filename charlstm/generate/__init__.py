"""Generating text: the one loop, the choice rule, stop texts, the torch and numpy engines.

How this folder works:
- loop.py is the generation loop, once (prime → choose → text → stop → step) for every door:
  `charlstm sample` and chat, the Python API, the server's batched rows. options.py checks
  the sampling options once (each door passes its own caps and option names); stops.py
  matches stop texts; choose.py is the next-token rule (temperature, top-k/p, one draw from
  the seed's stream, the UTF-8 mask of byte-level vocabularies); constrain.py keeps a text to
  a pattern or JSON schema (--regex, --json-schema: outlines-core's automaton, cached per
  pattern), its mask joining the UTF-8 one; logprobs.py gives a request that asks each
  token's log-probability under that same rule, and the top K. beam.py is beam search (the
  K most likely continuations, no draws) over the same Stepper, stop matcher and UTF-8 masks.
- items.py draws an item model's items through the loop (each from the separator, ending at
  it), keeping only new ones with --novel, within a bound on the candidates drawn.
- An engine is a Stepper (loop.py): torch_engine.py and numpy_engine.py compute a layer's
  input and run the cell's traced step laid out on buffers allocated once (plan.py,
  numpy_ops.py); neither names a cell. With --attention, torch's runs the training block
  on a window of one, numpy's its own step (numpy_attention.py), over a buffer of M slots.
- Same seed, prime and options: the same text from every door (tests/test_generation.py).
"""
