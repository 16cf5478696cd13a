"""Constrained sampling: a regular expression (or a JSON schema, turned into one) compiled by
outlines-core into an automaton over the model's own vocabulary, so that at every step only
the tokens that keep the text on a path to a full match can be chosen.

    pattern = pattern_of(regex=r"[A-Z][a-z]+")            # or json_schema={...}: its regex
    auto = automaton(pattern, tokenizer)                   # built once per (pattern, tokenizer)
    z, allowed = auto.choice_inputs(logits, [state], utf8)  # (B, V+1) each, for choose
    state = auto.next(state, token)                        # token == auto.end: the text ends

The end is a virtual token, id V (the vocabulary's size), that the automaton takes only in an
accepting state. Its score is the log of the probability (at temperature 1) that the model
puts on the tokens that cannot continue the match, so the model decides when a match ends:
temperature, top-k and top-p then treat it as any other token. A state that cannot go on ends
the text at once; a state every token can continue never ends it (only the length does).

The text matched is the generated text alone (not the prime). outlines-core works on bytes:
char and word tokens are their UTF-8, a BPE token its bytes (a piece of a character may stay
pending; every match is whole UTF-8, so a choice on the path to one never leaves bad bytes).
outlines-core is an optional extra (`pip install 'charlstm[steer]'`), imported only here.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import weakref
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from charlstm.errors import OptionError

EXTRA = "pip install 'charlstm[steer]'"
SCHEMA_SPACE = r"[ ]?"  # whitespace a schema's JSON may hold between its tokens: one space
MAX_PATTERNS = 64  # automata kept per tokenizer (the oldest goes first)


def _outlines() -> Any:
    try:
        import outlines_core
    except ImportError:
        raise OptionError("{regex} and {json_schema} need outlines-core: " + EXTRA) from None
    return outlines_core


def pattern_of(regex: object = None, json_schema: object = None) -> str | None:
    """The regular expression to match: `regex` itself, or the one of `json_schema` (a dict,
    its JSON text, or a Path to a file holding it); None when neither is given."""
    if regex is not None and json_schema is not None:
        raise OptionError("give {regex} or {json_schema}, not both")
    if regex is not None:
        if not isinstance(regex, str):
            raise OptionError(f"{{regex}} must be a text, not {type(regex).__name__}")
        return regex
    if json_schema is None:
        return None
    return _schema_regex(json.dumps(_schema(json_schema)))  # (properties keep their order)


@functools.lru_cache(maxsize=MAX_PATTERNS)
def _schema_regex(schema: str) -> str:
    """The regex of a schema (its JSON text), made once per schema."""
    _outlines()
    from outlines_core.json_schema import build_regex_from_schema

    try:
        return build_regex_from_schema(schema, whitespace_pattern=SCHEMA_SPACE)
    except (ValueError, TypeError, RuntimeError) as e:
        why = f"{{json_schema}} is not a schema outlines-core can follow: {_first_line(e)}"
        raise OptionError(why) from None


def _schema(given: object) -> dict[str, Any]:
    """The schema as a dict: a Path is read as JSON, a text parsed as JSON."""
    where = ""
    if isinstance(given, Path):
        where = f" in '{given}'"
        try:
            given = given.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            why = getattr(e, "strerror", None) or _first_line(e)
            raise OptionError(f"cannot read the {{json_schema}} file '{given}': {why}") from None
    if isinstance(given, str):
        try:
            given = json.loads(given)
        except ValueError as e:
            raise OptionError(f"the {{json_schema}}{where} is not JSON: {_first_line(e)}") from None
    if not isinstance(given, dict):
        raise OptionError(f"the {{json_schema}}{where} must be a JSON object (a schema), not "
                          f"{type(given).__name__}")  # fmt: skip
    return given


def _first_line(e: BaseException) -> str:
    return OptionError.literal((str(e).strip().splitlines() or [type(e).__name__])[0])


def token_bytes(tokenizer: Any) -> list[bytes | None]:
    """What each token id writes, as bytes; None for a token no text spells (a word model's
    unknown-word placeholders)."""
    if tokenizer.kind == "bpe":
        return list(tokenizer.utf8_rows(1).table.token_bytes)
    unknown = set(tokenizer.unknown_ids)
    return [None if i in unknown else tokenizer.piece(i).encode()
            for i in range(tokenizer.vocab_size)]  # fmt: skip


class Automaton:
    """A pattern's automaton over one vocabulary of V tokens, the end being id V; the
    allowed-token mask of each state visited is made once and kept."""

    def __init__(self, pattern: str, tokenizer: Any, what: str = "regex") -> None:
        oc = _outlines()
        self.pattern = pattern
        self.vocab_size = tokenizer.vocab_size
        self.end = self.vocab_size  # the virtual "end here" token
        spelled: dict[bytes, list[int]] = {}
        for i, b in enumerate(token_bytes(tokenizer)):
            if b:  # an empty token would be a step that writes nothing
                spelled.setdefault(b, []).append(i)
        # outlines-core refuses a pattern any part of which the vocabulary cannot spell (a JSON
        # number's exponent needs "+" or "-"), so every byte a char or word vocabulary lacks
        # gets an id past the end, never chosen: the states only they lead on from are pruned.
        lacking = [b for b in range(256) if bytes([b]) not in spelled]
        for b in lacking:
            spelled[bytes([b])] = [self.end + 1 + b]
        try:
            self.index = oc.Index(pattern, oc.Vocabulary(self.end, spelled))
        except ValueError as e:
            raise OptionError(_why_not(pattern, str(e), what)) from None
        self.initial = self.index.get_initial_state()
        self._steps: dict[int, _Step] = {}
        self._live: set[int] | None = None  # None: every state outlines-core kept is live
        needs: set[int] = set()  # the bytes the vocabulary lacks on the way to a match
        if lacking:
            self._live, needs = self._spellable()
        if not self.at(self.initial).mask.any():
            raise OptionError(f"no text the model's vocabulary can spell matches {{{what}}}"
                              + _shown(pattern, what) + _never_saw(needs))
        if not self.goes_on(self.initial):
            raise OptionError(f"{{{what}}}{_shown(pattern, what)} matches only the empty text: "
                              "nothing to generate")

    def at(self, state: int) -> _Step:
        """What a text in `state` may do next (made on the first visit, then kept)."""
        step = self._steps.get(state)
        if step is None:
            v = self.end
            mask = np.zeros((1, v + 1), dtype=bool)
            tokens = [t for t in self.index.get_allowed_tokens(state) or [] if t <= v]
            if self._live is not None:
                live, go = self._live, self.index.get_next_state
                tokens = [t for t in tokens if t == v or go(state, t) in live]
            mask[0, tokens] = True
            off = np.flatnonzero(~mask[0, :v]) if mask[0, v] else None
            if off is not None and not len(off):  # every token goes on: no mass to end with
                mask[0, v], off = False, None
            step = self._steps[state] = _Step(mask, off, bool(mask[0, :v].any()))
        return step

    def _spellable(self) -> tuple[set[int], set[int]]:
        """The states the model's own tokens lead to from the start and on to a match; and the
        bytes (lacking from the vocabulary) that the states it reaches would need."""
        trans, v = self.index.get_transitions(), self.end
        seen, todo, back, needs = {self.initial}, [self.initial], {}, set()
        while todo:
            state = todo.pop()
            for token, after in trans.get(state, {}).items():
                if token > v:
                    needs.add(token - v - 1)
                elif token < v:
                    back.setdefault(after, []).append(state)
                    if after not in seen:
                        seen.add(after)
                        todo.append(after)
        live = {s for s in seen if self.index.is_final_state(s)}
        todo = list(live)
        while todo:
            for before in back.get(todo.pop(), ()):
                if before not in live:
                    live.add(before)
                    todo.append(before)
        return live, needs

    def goes_on(self, state: int) -> bool:
        """Whether a text in `state` can take another token (if not, it ends there)."""
        return self.at(state).goes_on

    def next(self, state: int, token: int) -> int:
        return self.index.get_next_state(state, token)

    def choice_inputs(
        self, logits: np.ndarray, states: list[int], utf8: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """What choose() takes for rows in `states`: the logits (B, V) with the end's score as
        column V (the log of the mass on the tokens that cannot continue), and the allowed
        tokens (B, V+1), within the rows' UTF-8 masks `utf8` ((B, V), (1, V) or None) where
        that leaves any."""
        v = self.end
        steps = [self.at(s) for s in states]
        allowed = steps[0].mask if len(steps) == 1 else np.concatenate([s.mask for s in steps])
        if utf8 is not None:
            both = allowed[:, :v] & utf8
            keep = both.any(axis=1)
            allowed = allowed.copy()  # (the kept masks are never written)
            allowed[keep, :v] = both[keep]  # else the pattern alone: its path is UTF-8
        z = np.empty((len(steps), v + 1))
        z[:, :v] = logits
        z[:, v] = 0.0  # a finite stand-in where the end is not allowed
        for i, step in enumerate(steps):
            if step.off is not None:
                off = z[i, step.off]
                top = off.max()
                z[i, v] = top + np.log(np.exp(off - top).sum())
        return z, allowed


class _Step(NamedTuple):
    """An automaton state as sampling sees it."""

    mask: np.ndarray  # (1, V+1) bool: the tokens on a path to a match; column V: may end here
    off: np.ndarray | None  # where it may end: the tokens that cannot continue (the end's mass)
    goes_on: bool  # some token can follow (else the text ends here)


def _why_not(pattern: str, message: str, what: str) -> str:
    """outlines-core's refusal as one line: a pattern that does not compile, or that the
    vocabulary cannot spell."""
    first = (message.strip().splitlines() or ["?"])[0]
    if "incompatible" in first:
        missing = re.search(r"characters: \[(.*?)\]", first)
        seen = missing.group(1) if missing else ""
        never = f" (it never saw {seen})" if seen and len(seen) < 60 else ""
        return (f"no text the model's vocabulary can spell matches {{{what}}}"
                + _shown(pattern, what) + OptionError.literal(never))
    return f"{{{what}}}{_shown(pattern, what)} does not compile: {OptionError.literal(first)}"


def _never_saw(needs: set[int]) -> str:
    """' (it never saw "@")': the characters the vocabulary lacks that a match would need."""
    ascii_ = "".join(chr(b) for b in sorted(needs) if 32 <= b < 127)
    shown = ", ".join(json.dumps(c) for c in ascii_[:12])
    if any(b >= 128 for b in needs):
        shown += (", and " if shown else "") + "characters beyond ASCII"
    return OptionError.literal(f" (it never saw {shown})") if shown else ""


def _shown(pattern: str, what: str) -> str:
    """The regex as the message shows it (a schema's is long, and the user wrote the schema)."""
    if what != "regex":
        return ""
    return " '" + OptionError.literal(pattern if len(pattern) <= 80 else pattern[:77] + "...") + "'"


_CACHE: weakref.WeakKeyDictionary[Any, dict[str, Automaton]] = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def automaton(pattern: str, tokenizer: Any, what: str = "regex") -> Automaton:
    """The pattern's automaton over the tokenizer's vocabulary, built on first use and kept
    (MAX_PATTERNS per tokenizer): a pattern compiles once, not once per sample."""
    with _CACHE_LOCK:
        kept = _CACHE.setdefault(tokenizer, {})
        found = kept.get(pattern)
    if found is not None:
        return found
    built = Automaton(pattern, tokenizer, what)
    with _CACHE_LOCK:
        if len(kept) >= MAX_PATTERNS:
            del kept[next(iter(kept))]
        kept[pattern] = built
    return built
