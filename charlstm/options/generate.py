"""The flags of `charlstm sample` and `charlstm chat`: the sampling options (generate/options.py's
SamplingOptions, by the same names, checked there once) and how the text is given and shown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charlstm.config import (
    DEFAULT_ITEMS,
    ENGINES,
    ITEM_TEMPERATURE,
    MAX_BEAM,
    MAX_ITEMS,
    MAX_SAMPLES,
    SampleConfig,
    check_count,
    option,
)
from charlstm.errors import OptionError
from charlstm.options import common
from charlstm.options.render import shown


# The draw options sample and chat share, each declared once (a function: a dataclass field
# can belong to one class only).
def _temp(items: bool = False) -> Any:
    items_own = f"; an item model's items: {shown(ITEM_TEMPERATURE)}" if items else ""
    return option("Temperature: 0 = greedy, lower = safer, higher = wilder.",
                  says=shown(SampleConfig.temperature) + items_own, flags=("--temp",))


def _top_k() -> Any:
    return option("Sample among the k most likely tokens.", says="0 = all")


def _top_p() -> Any:
    return option("Sample among the most likely tokens whose probability sums to p.",
                  says="1 = all")


def _seed(reported: bool = False) -> Any:
    return option("Random seed; random when absent" + (" and reported on stderr." if reported
                                                      else "."))  # fmt: skip


@dataclass
class SampleOptions:
    """The flags of `charlstm sample`: the sampling options (generate/options.py's
    SamplingOptions, by the same names, checked there once) and how the text is given and shown."""

    model: Path | None = common.model()
    prime: str | None = option("Text that starts the sample and warms the state; - reads stdin.")
    prime_file: Path | None = option("Read the prime from this file (UTF-8) instead.")
    length: int | None = option(
        "Tokens to generate: characters for a char model, words or runs of spacing for word, "
        "subwords for bpe.", says=str(SampleConfig.length), flags=("--length", "-n"))
    temp: float | None = _temp(items=True)
    top_k: int | None = _top_k()
    top_p: float | None = _top_p()
    greedy: bool = option("Always take the most likely token (= --temp 0).", False)
    stop: list[str] | None = option(
        "End the sample before this text (give it again for more); the text itself is not "
        "printed. E.g. --stop $'\\n\\n' for one paragraph.")
    seed: int | None = _seed(reported=True)
    regex: str | None = option(
        "Only text that matches this regular expression (in full, from after the prime): at "
        "each step only tokens on a path to a match can be chosen, and the text ends when it "
        "matches and the model chooses to end it. Needs outlines-core (charlstm[steer]).",
        metavar="PATTERN")
    json_schema: Path | None = option(
        "Only JSON that this JSON schema (a file) accepts, as --regex: types, required "
        "properties, enum, const, string pattern and lengths, array lengths (outlines-core's "
        "schemas; numbers' minimum and maximum are not enforced).", metavar="FILE")
    num_samples: int = option(
        "Independent samples, generated together in one batch from the same prime. With more "
        "than one, each is printed whole under a line [bold]--- sample I ---[/] (I from 1), "
        "samples separated by a blank line; only a single sample streams.", 1,
        flags=("--num-samples", "-N"))
    beam: int | None = option(
        "Beam search: the K most likely continuations, best first, found deterministically "
        "(no --temp, --top-k, --top-p, --seed or -N), each printed whole under a line "
        '[bold]--- beam I · log-prob X ---[/] (--json: {"beam": I, "logprob": X, "tokens": N, '
        '"text": ...}); X is the natural log of the probability of its tokens, a stop '
        f"text's included. K from 1 to {MAX_BEAM}.", metavar="K")
    json_out: bool = option(
        'One JSON object per sample per line: {"sample": I, "seed": SEED, "text": prime + '
        'generated text} (without the prime with --no-echo-prime).', False, flags=("--json",))
    logprobs: int | None = option(
        'With --json: each sample\'s "logprobs" too, as OpenAI\'s completions give them '
        '({"tokens", "token_logprobs", "top_logprobs", "text_offset"}): every generated token\'s '
        "log-probability under the distribution it was drawn from (greedy: temperature 1's) "
        "and the K most likely tokens with theirs (0: the token's own alone).", metavar="K")
    echo_prime: bool = option("Print the prime before the sample.", True,
                              flags=("--echo-prime/--no-echo-prime",))
    on_unknown: str = option("Prime characters the model never saw: error or skip.", "error",
                             choices=("error", "skip"))
    adapt: int = option(
        "Learn from the prime first, reading it this many times with dynamic evaluation's "
        "updates, so a page of text steers the style (0 = off). The checkpoint is not changed.",
        0, metavar="PASSES")
    items: int | None = option(
        "An item model (trained with --items): print this many items, one per line, each from "
        "the start.", says=f"{DEFAULT_ITEMS} for an item model", metavar="N")
    novel: bool = option(
        "With an item model: print only items that are not in the training list and not "
        "printed already; stderr says how many candidates it took.", False)
    engine: str = option(
        "What generates: numpy (from the run's model.safetensors, without loading torch: the "
        "first character in a fraction of a second), torch, or auto: numpy when "
        "model.safetensors is there and up to date.", "auto", choices=ENGINES)
    checkpoints: Path = common.checkpoints()
    threads: int = common.threads()
    quiet: bool = common.quiet()

    @property
    def constrained(self) -> bool:
        """Whether --regex or --json-schema constrains the text."""
        return self.regex is not None or self.json_schema is not None

    def check(self) -> None:
        """The options that cannot go together: one OptionError naming the first, before the
        prime is read or the model loads. Each value's own range is check_sampling's and
        check_beam's (generate/options.py); what needs the model's tokens, api.check_adapt's."""
        if self.logprobs is not None and not self.json_out:
            raise OptionError("{logprobs} are shown in JSON: add {json}")
        if self.beam is not None:  # check_beam names what beam search does not take
            return
        items = self.items is not None
        if (items or self.novel) and (self.prime is not None or self.prime_file is not None):
            raise OptionError("{items} starts every item from the start; drop the prime")
        check_count(self.num_samples, MAX_SAMPLES, "--num-samples", "num_samples")
        if items and self.num_samples != 1:
            raise OptionError("{items} prints items, one per line; drop {num_samples}",
                              flags={"num_samples": "--num-samples"})  # fmt: skip
        if items:
            check_count(self.items, MAX_ITEMS, "--items", "items")
        if self.adapt and self.engine == "numpy":
            raise OptionError("{adapt} learns with torch; drop {engine=numpy}")


@dataclass
class ChatOptions:
    """The flags of `charlstm chat`: how long a reply runs and where it ends, and the draws."""

    model: Path | None = common.model()
    length: int = option("Tokens at most per reply.", 400, flags=("--length", "-n"))
    stop: list[str] | None = option(
        "A reply ends before this text (give it again for more).", says="a blank line")
    temp: float | None = _temp()
    top_k: int | None = _top_k()
    top_p: float | None = _top_p()
    seed: int | None = _seed()
    checkpoints: Path = common.checkpoints()
    threads: int = common.threads()
    quiet: bool = common.quiet()
