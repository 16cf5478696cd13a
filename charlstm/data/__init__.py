"""Text to batches: corpora, tokenizers, the token cache, the split, windows of B streams.

How this folder works, in the order text flows:
- corpus.py resolves arguments (files, folders, -, built-ins from builtin.py) into a stream of
  text, every source decoded one way (decoding.py); no torch.
- tokenizer.py (char, and choosing a kind), hf_tokenizers.py (word, bpe) and what they share
  (pieces.py); tokens.py trains one and writes the ids into the cache.
- split.py is the one train/validation cut; batches.py cuts the ids into B streams × T steps;
  items.py cuts a list (--items) into items, each a row from a zero state, and keeps their
  hashes for `sample --novel`.
"""
