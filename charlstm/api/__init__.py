"""The front door for Python, and what the CLI calls: train a model, load one, and use it.

    from charlstm import load, train
    summary = train(["corpus.txt"], budget="2m", report=print)   # the run `charlstm train` makes
    model = load("checkpoints/my-run")               # a run folder or .pt file; None: the newest
    for piece in model.generate(prime="ROMEO:", temp=0.8, length=200, seed=1):
        print(piece, end="")
    print(model.evaluate(open("held_out.txt").read()))   # loss, perplexity, bits per character
    print(model.evaluate(text, dynamic=True))   # learning from the text as it reads it
    model.generate(prime=open("page.txt").read(), adapt=2)   # learn the prime's style first

Nothing here prints; expected failures raise CharlstmError subclasses whose message is one line
(errors.py), and options are checked by the config dataclasses (config.py).

    training.py  train, train_options          loading.py  load, info, export
    model.py     Model (generate, beam, evaluate, trace), check_adapt
    session.py   Session (a conversation)      runs.py     thin doors for the rest of the CLI

Importing this package imports numpy but no torch: only the calls that need torch load it.
"""

from charlstm.api.loading import export, info, load
from charlstm.api.model import Model, check_adapt, random_seed
from charlstm.api.runs import (
    check_coder,
    codec,
    compressed_header,
    delete_run,
    list_runs,
    read_bytes,
    read_prime,
    read_text,
    run_age,
    slim_run,
    torch_device,
    units_tracking,
    use_threads,
)
from charlstm.api.scoring import EncodedText, Trace
from charlstm.api.session import Session
from charlstm.api.training import log, train, train_options
from charlstm.config import ENGINES
from charlstm.generate.logprobs import Token, openai_logprobs
from charlstm.generate.options import SamplingOptions, check_beam, check_sampling

__all__ = ["ENGINES", "EncodedText", "Model", "SamplingOptions", "Session", "Token",
           "Trace", "check_adapt", "check_beam", "check_coder", "check_sampling", "codec",
           "compressed_header", "delete_run", "export", "info", "list_runs", "load", "log",
           "openai_logprobs", "random_seed", "read_bytes", "read_prime", "read_text", "run_age",
           "slim_run", "torch_device", "train", "train_options", "units_tracking",
           "use_threads"]  # fmt: skip
