"""Text to batches: corpora, tokenizers, the token cache, windows of B streams."""
