"""charlstm: train LSTM language models on any text, from the command line or from Python.

    from charlstm import load, train
    summary = train(["corpus.txt"], budget="2m")
    model = load()                                   # the newest run under ./checkpoints
    print("".join(model.generate(prime="ROMEO:", length=200, seed=1)))

Importing the package must not import torch, so `charlstm --help` stays instant: the names
below come from charlstm.api on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("load", "train", "info", "Model")


def __getattr__(name: str) -> Any:
    if name in _API:
        from charlstm import api

        return getattr(api, name)
    if name == "CharlstmError":
        from charlstm.errors import CharlstmError

        return CharlstmError
    raise AttributeError(f"module 'charlstm' has no attribute {name!r}")


__all__ = ["CharlstmError", "Model", "__version__", "info", "load", "train"]
