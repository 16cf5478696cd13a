"""charlstm: train LSTM language models from the command line.

Version only: importing the package must not import torch, so `--help` stays instant.
"""

__version__ = "0.1.0"
