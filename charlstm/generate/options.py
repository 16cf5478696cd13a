"""The sampling options, checked once for every door: `charlstm sample` and chat, the Python
API (Model.generate, samples, session) and the server, each with its own caps and its own
names for the options (the messages name them as the caller knows them: errors.OptionError).

    given = check_sampling(length=200, temp=0.8, seed=7, stop=["\\n\\n"])   # SamplingOptions
    given.cfg, given.seed, given.stop        # SampleConfig, the seed (None: pick one), texts

    check_sampling(length=n, temp=t, caps=Caps(max_length=512), names={"temp": "temperature"})
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import numpy as np

from charlstm.config import MAX_ADAPT_PASSES, MAX_BEAM, SampleConfig
from charlstm.errors import OptionError
from charlstm.generate.choose import MAX_SEED

if TYPE_CHECKING:
    from charlstm.generate.constrain import Automaton

MAX_LENGTH = 100_000_000  # tokens one sample may ask for (SampleConfig's range)
MAX_LOGPROBS = 20  # alternatives per token a logprobs request may ask for (OpenAI's chat: 20)


@dataclass(frozen=True)
class Caps:
    """A door's own limits."""

    max_length: int = MAX_LENGTH
    default_length: int = SampleConfig.length
    max_stops: int | None = None  # stop texts at most (None: any number)
    max_stop_chars: int | None = None  # characters per stop text at most
    max_logprobs: int = MAX_LOGPROBS  # logprobs at most


@dataclass(frozen=True)
class Checked:
    cfg: SampleConfig
    seed: int | None  # None: the caller picks a random one
    stop: tuple[str, ...]
    logprobs: int | None = None  # K alternatives per token (None: no log-probabilities)
    pattern: str | None = None  # the regex every text must match (a schema's), or None
    pattern_from: str = "regex"  # the option that gave it: "regex" or "json_schema"


class SamplingOptions(TypedDict, total=False):
    """The sampling options by their Python names, declared once: Model.generate, samples and
    session take them as keywords (the CLI's flags are these with dashes)."""

    length: int | None  # tokens to generate; None: the door's default (SampleConfig's)
    temp: float | None  # temperature: 0 = greedy; None: SampleConfig's
    top_k: int | None  # sample among the k most likely tokens (0 = all)
    top_p: float | None  # ... among the most likely whose probability sums to p (1 = all)
    greedy: bool  # always the most likely token (= temp 0)
    seed: int | None  # the draws; None: a random seed
    stop: Sequence[str] | str | None  # end before the first of these texts
    on_unknown: str  # prime characters the model never saw: "error" or "skip"
    adapt: int  # passes learning from the prime first (0 = off)
    logprobs: int | None  # each token's log-probability and the top K (None: none; logprobs.py)
    regex: str | None  # only texts that match this regular expression (constrain.py)
    json_schema: dict[str, Any] | str | Path | None  # only JSON that this schema accepts


def check_sampling(
    *,
    caps: Caps = Caps(),  # noqa: B008 (frozen)
    names: dict[str, str] | None = None,
    **options: Unpack[SamplingOptions],
) -> Checked:
    """Every sampling option checked (one OptionError naming the first bad one as `names`
    calls it: keyword -> the caller's name, where it differs; its `option` is that name), as
    a SampleConfig, the seed and the stop texts. What needs the model (the prime's tokens, adapt's
    two of them) is api.Model.encode_prime's and api.check_adapt's."""
    unknown = set(options) - set(SamplingOptions.__annotations__)
    if unknown:
        raise TypeError(f"unexpected keyword argument {sorted(unknown)[0]!r}")
    length, temp, top_k, top_p, seed = (options.get(k) for k in _MAYBE)
    greedy, stop = options.get("greedy", False), options.get("stop", ())
    on_unknown, adapt = options.get("on_unknown", "error"), options.get("adapt", 0)
    logprobs = options.get("logprobs")

    def bad(template: str, value: object = None) -> OptionError:
        rename = names or {}
        named = _KEY.sub(lambda m: "{" + rename.get(m.group(1), m.group(1)), template)
        error = OptionError(named.replace("VALUE", _lit(value)))
        key = _KEY.search(template).group(1)  # type: ignore[union-attr]
        error.option = rename.get(key, key)  # type: ignore[attr-defined] (the one it names)
        return error

    if length is not None and (not _whole(length) or not 0 <= length <= caps.max_length):
        raise bad(f"{{length}} must be a whole number from 0 to {caps.max_length:,}, not VALUE",
                  length)  # fmt: skip
    for key, value, what in (("temp", temp, "a number"), ("top_k", top_k, "a whole number")):
        if value is not None and (not _number(value, key == "top_k") or not value >= 0):
            raise bad(f"{{{key}}} must be {what}, 0 or more, not VALUE", value)
    if top_p is not None and (not _number(top_p, False) or not 0 < top_p <= 1):
        raise bad("{top_p} must be in (0, 1], not VALUE", top_p)
    if greedy:
        given = (("temp", temp, 0), ("top_k", top_k, 0), ("top_p", top_p, 1))
        clash = [k for k, v, neutral in given if v is not None and v != neutral]
        if clash:
            raise bad("{greedy} always takes the most likely token; drop "
                      + ", ".join(f"{{{k}}}" for k in clash))  # fmt: skip
        temp = 0.0
    if seed is not None and (not _whole(seed) or not 0 <= seed <= MAX_SEED):
        raise bad(f"{{seed}} must be a whole number from 0 to {MAX_SEED:,} or None, not VALUE",
                  seed)  # fmt: skip
    stops = _stops(stop, caps, bad)
    regex, schema = options.get("regex"), options.get("json_schema")
    pattern = None
    if regex is not None or schema is not None:
        from charlstm.generate.constrain import pattern_of

        try:
            pattern = pattern_of(regex, schema)
        except OptionError as e:
            raise _renamed(e, names) from None
    if on_unknown not in ("error", "skip"):
        raise bad("{on_unknown} must be error or skip, not VALUE", on_unknown)
    if not _whole(adapt) or not 0 <= adapt <= MAX_ADAPT_PASSES:
        raise bad(f"{{adapt}} must be a whole number of passes from 0 to {MAX_ADAPT_PASSES:,}, "
                  "not VALUE", adapt)  # fmt: skip
    if logprobs is not None and (not _whole(logprobs) or not 0 <= logprobs <= caps.max_logprobs):
        raise bad(f"{{logprobs}} must be a whole number from 0 to {caps.max_logprobs} (the "
                  "alternatives shown per token), not VALUE", logprobs)  # fmt: skip
    cfg = SampleConfig.build(caps.default_length if length is None else length, temp, top_k,
                             top_p)  # fmt: skip
    return Checked(cfg, None if seed is None else int(seed), stops,
                   None if logprobs is None else int(logprobs), pattern,
                   "regex" if regex is not None else "json_schema")  # fmt: skip


def constraint(
    given: Checked, tokenizer: Any, names: dict[str, str] | None = None
) -> Automaton | None:
    """The automaton of the checked pattern over the tokenizer's vocabulary (constrain.py,
    cached per pattern), or None without one; a pattern the vocabulary cannot spell, or that
    does not compile, is an OptionError named as `names` calls the option."""
    if given.pattern is None:
        return None
    from charlstm.generate.constrain import automaton

    try:
        return automaton(given.pattern, tokenizer, given.pattern_from)
    except OptionError as e:
        raise _renamed(e, names) from None


def _renamed(error: OptionError, names: dict[str, str] | None) -> OptionError:
    """The error, its options named as the caller knows them (check_sampling's `names`)."""
    rename = names or {}
    named = OptionError(_KEY.sub(lambda m: "{" + rename.get(m.group(1), m.group(1)),
                                 error.template), code=error.code)  # fmt: skip
    key = _KEY.search(error.template)
    named.option = rename.get(key.group(1), key.group(1)) if key else None  # type: ignore[attr-defined]
    return named


_MAYBE = ("length", "temp", "top_k", "top_p", "seed")  # the options that may be None


def check_beam(k: object, **given: object) -> int:
    """Beam search's K, a whole number from 1 to MAX_BEAM, given with none of the options that
    only sampling takes (`given`: the caller's options by name; those of _SAMPLES must be at
    their neutral values): beam search is deterministic and draws nothing. One OptionError
    naming the first (K as `k`, or --beam on the command line)."""
    if not _whole(k) or not 1 <= k <= MAX_BEAM:  # type: ignore[operator]
        raise OptionError(f"{{k}} must be a whole number from 1 to {MAX_BEAM}, not {_lit(k)}",
                          flags={"k": "--beam"})  # fmt: skip
    for name, neutral in _SAMPLES.items():
        if given.get(name, neutral) != neutral:
            raise OptionError(f"{{beam}} finds the most likely texts and does not sample: drop "
                              f"{{{name}}}")  # fmt: skip
    return int(k)  # type: ignore[call-overload]


# What only sampling takes, each with its value when not given.
_SAMPLES = {"temp": None, "top_k": None, "top_p": None, "greedy": False, "seed": None,
            "num_samples": 1, "adapt": 0, "logprobs": None, "items": None,
            "novel": False, "regex": None,
            "json_schema": None}  # fmt: skip


def _stops(stop: object, caps: Caps, bad: Callable[..., OptionError]) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else stop
    if not isinstance(stops, list | tuple) or not all(isinstance(s, str) for s in stops):
        raise bad("{stop} must be a text, a list of texts or None, not VALUE", stop)
    if any(not s for s in stops):
        raise bad("{stop} needs a text that is not empty")
    many, chars = caps.max_stops, caps.max_stop_chars
    if (many is not None and len(stops) > many) or (
        chars is not None and any(len(s) > chars for s in stops)
    ):
        raise bad(f"{{stop}} takes at most {many} texts of 1 to {chars} characters")
    return tuple(stops)


_KEY = re.compile(r"\{([a-z_]+)")


def _whole(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | np.integer)


def _number(value: object, whole: bool) -> bool:
    if whole:
        return _whole(value)
    return (not isinstance(value, bool) and isinstance(value, int | float | np.number)
            and not math.isnan(value))  # fmt: skip


def _lit(value: object) -> str:
    """A value the caller gave, quoted, as literal text in an OptionError."""
    return OptionError.literal(repr(value) if isinstance(value, str) else value)
