"""What a user can ask for: every option of every command declared once, as a dataclass field
with its help, its choices, its flag and the config field it goes `into`. The CLI's parameters
are generated from these fields (cli/options.py), and each help's "Default: ..." is rendered
from the dataclasses and presets (render.py), never typed by hand. No torch.

STYLE: a new option is a field of its command's dataclass (train.py, generate.py, inspect.py,
tools.py), and the options it cannot go with are refused by that dataclass's check() (one
OptionError, named as flags by the CLI); a new command's options get a dataclass here, not
parameters written out in cli/. An option several commands offer (--model, --checkpoints,
--threads, --device, --quiet, ...) is a function in common.py that each of their dataclasses
calls. A dataclass the API or the server also takes (TrainOptions, config.ServeConfig) gets no
CLI-only field: the command's own go into a second dataclass beside it (TrainOutput,
ServeOptions).
"""

from charlstm.options.generate import ChatOptions, SampleOptions
from charlstm.options.inspect import EvaluateOptions, VisualizeOptions
from charlstm.options.presets import (
    CHANGEABLE_ON_RESUME,
    FINE_TUNE_BUDGET,
    FINE_TUNE_PRESET,
    FIXED_BY_BASE,
    FIXED_BY_RUN,
)
from charlstm.options.render import default_of, help_text, shown
from charlstm.options.tools import (
    CompressOptions,
    DecompressOptions,
    ExportOptions,
    InfoOptions,
    RunsOptions,
    ServeOptions,
)
from charlstm.options.train import TrainOptions, TrainOutput, apply_preset

__all__ = ["CHANGEABLE_ON_RESUME", "FINE_TUNE_BUDGET", "FINE_TUNE_PRESET", "FIXED_BY_BASE",
           "FIXED_BY_RUN", "ChatOptions", "CompressOptions", "DecompressOptions", "EvaluateOptions",
           "ExportOptions", "InfoOptions", "RunsOptions", "SampleOptions", "ServeOptions",
           "TrainOptions", "TrainOutput", "VisualizeOptions", "apply_preset", "default_of",
           "help_text", "shown"]  # fmt: skip
