"""`charlstm serve`: an OpenAI-style HTTP API over continuous batching."""
