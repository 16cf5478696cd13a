"""The flags of `charlstm evaluate` and `charlstm visualize`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from charlstm.config import (
    DYNAMIC_LR,
    EVAL_PRECISIONS,
    option,
)
from charlstm.errors import OptionError
from charlstm.options import common

_DYN = "DynamicConfig."
# What visualize --kind completes to: the layers' activations and gates (which a cell has is
# known once the model loads).
_KINDS = ("hidden", "cell", "forget", "input", "output", "update", "reset", "normalizer",
          "stabilizer")  # fmt: skip


@dataclass
class EvaluateOptions:
    """The flags of `charlstm evaluate`; the --dynamic-* ones go into DynamicConfig."""

    text: list[str] = common.texts("Held-out text")
    model: Path | None = common.model()
    streams: int = option(
        "Parallel streams, each carrying its state; 1 = one sequential pass. Each stream first "
        "reads the 256 tokens before its start (256 + M with --attention M), unscored, so the "
        "figure matches one pass closely (within 1e-4 nats on a character model) at a fraction "
        "of the time; a text too short for that is read in fewer streams.", 64)
    encoding: str = common.encoding()
    errors: str = common.errors()
    json_out: bool = option("Print one JSON object.", False, flags=("--json",))
    per_line: bool = option(
        'One JSON object per input line: {"line": TEXT, "tokens": N, "nats": TOTAL, '
        '"bits_per_char": BPC}. One sequential pass carries the state through the whole text; '
        "a line's newline counts in that line; the text's first character is not predicted.",
        False)
    per_token: bool = option(
        'One JSON object per token: {"token": TEXT, "logprob": NATS}, its log-probability from '
        "one sequential pass from a zero state (the first token, which nothing predicts, has "
        "null); the tokens' texts add up to the text read.", False)
    precision: str = option(
        "fp32 (exact), or bf16: about twice as fast on a GPU or a CPU with bf16 instructions, "
        "the loss within 1e-4 of fp32's on a trained model (BENCHMARKS.md).", "fp32",
        choices=EVAL_PRECISIONS)
    reset_every: int = option(
        "Score the text in blocks of this many tokens, each from a zero state, so a prediction "
        "sees at most that much context (64: what nanoGPT's CPU recipe sees). 0 = carry the "
        "state through the text.", 0)
    dynamic: bool = option(
        "Dynamic evaluation (Krause et al. 2018): read the text as one stream, and after scoring "
        "each segment take a gradient step on it, so the model keeps learning the text as it "
        "reads it. Every token is scored before it is learnt from; the checkpoint file is not "
        "changed.", False)
    dynamic_rule: str | None = option(
        "--dynamic: rms (the paper's rule: steps scaled by the training split's gradient sizes, "
        "decaying towards the trained weights) or sgd.", into=_DYN + "rule")
    dynamic_lr: float | None = option(
        "--dynamic: step size.", into=_DYN + "lr",
        says=", ".join(f"{lr:g} ({rule})" for rule, lr in DYNAMIC_LR.items()))
    dynamic_decay: float | None = option(
        "--dynamic: pull towards the trained weights at each step (0 = none).",
        into=_DYN + "decay")
    dynamic_segment: int | None = option("--dynamic: tokens per gradient step.",
                                         into=_DYN + "segment")
    checkpoints: Path = common.checkpoints()
    threads: int = common.threads()
    device: str = common.device()
    quiet: bool = common.quiet()

    def tuned(self) -> dict[str, object]:
        """The --dynamic-* options given, under DynamicConfig's names."""
        return {f.metadata["into"].split(".")[1]: getattr(self, f.name) for f in fields(self)
                if (f.metadata.get("into") or "").startswith(_DYN)
                and getattr(self, f.name) is not None}  # fmt: skip

    def check(self) -> None:
        """The options that cannot go together: one OptionError naming the first, before the
        text is read or the model loads. (Each value's own range is DynamicConfig's and the
        API's.)"""
        if self.reset_every and (self.per_line or self.per_token):
            raise OptionError("{per_line} and {per_token} score one pass carrying the state; "
                              "drop {reset_every}")  # fmt: skip
        if self.per_token and (self.per_line or self.dynamic):
            raise OptionError("{per_token} scores each token of one plain pass; drop {per_line} "
                              "and {dynamic}")  # fmt: skip
        if not self.dynamic and self.tuned():
            raise OptionError("{dynamic_rule}/-lr/-decay/-segment tune {dynamic}; add {dynamic}")


@dataclass
class VisualizeOptions:
    """The flags of `charlstm visualize`."""

    text: list[str] = common.texts()
    model: Path | None = common.model()
    kind: str = option(
        "What to colour by: hidden, cell, forget, input or output (gru: update, reset; slstm "
        "also: normalizer, stabilizer); or attention: for each character, the earlier ones "
        "--attention's head looked at most.", "cell", completes=_KINDS)
    layer: int | None = option("Layer to trace, counting from 0.", says="the last")
    unit: int | None = option("Unit to show.", says="the best 5 with --find, else 0")
    find: bool = option(
        "Rank every unit and gate by correlation with simple properties of the text (in quotes, "
        "in brackets, line position, word starts) and show the best 5.", False)
    html_out: Path | None = option(
        "Also write the shown units as one self-contained HTML page (hover for values).",
        flags=("--html",))
    max_chars: int = option(
        "Trace only the first N characters (one step each: slow on long text).", 2000)
    output_format: str | None = option(
        "What stdout gets: ansi (the text coloured by each unit), tsv (a header, then one row per "
        "character: position, the character escaped, each unit's value) or json (one object per "
        "character).", says="ansi on a terminal, tsv otherwise", flags=("--format",),
        choices=("ansi", "tsv", "json"))
    encoding: str = common.encoding()
    errors: str = common.errors()
    checkpoints: Path = common.checkpoints()
    threads: int = common.threads()
    quiet: bool = common.quiet()

    def check(self) -> None:
        """Flags that name a unit mean nothing for --kind attention: refused, not ignored."""
        if self.kind == "attention":
            named = [f"{{{k}}}" for k in ("layer", "unit") if getattr(self, k) is not None]
            named += ["{find}"] if self.find else []
            if named:
                listed = ", ".join(named[:-1]) + " and " + named[-1] if len(named) > 1 else named[0]
                raise OptionError(f"{listed} pick{'' if len(named) > 1 else 's'} a unit to colour "
                                  "by; {kind=attention} shows where the head looks instead")

    def check_traced(self, activations: dict[str, Any], cell: str) -> None:
        """--kind and --unit against what the traced layer holds (`activations`: kind ->
        (T, H) values), which only the model knows: an OptionError for one it lacks."""
        if self.kind not in activations:
            raise OptionError(f"{{kind}}: {OptionError.literal(cell)} layers have no "
                              f"{OptionError.literal(repr(self.kind))}; choose one of "
                              f"{', '.join(activations)}")  # fmt: skip
        hidden = activations[self.kind].shape[1]
        if self.unit is not None and not 0 <= self.unit < hidden:
            raise OptionError(f"{{unit}} must be between 0 and {hidden - 1}, got {self.unit}")
