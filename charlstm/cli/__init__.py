"""The command line, one file per command: options (generated from charlstm.options'
dataclasses, which also check how they combine), calls into charlstm.api, and the results
handed to charlstm.display (stderr, and stdout through display/stdout.py).
`app` is the Typer app; `main` the console entry point (`charlstm`, `python -m charlstm`).
A new command goes into a file of its own here, registered by its import below."""
# isort: skip_file

from charlstm.cli.app import app, main

# Registered in this order, the order `charlstm --help` lists them in.
from charlstm.cli import train, sample, evaluate, info, visualize, runs, chat  # noqa: F401
from charlstm.cli import compress, export, serve  # noqa: F401

__all__ = ["app", "main"]
