"""Session: a conversation with a model, its turns continuing one recurrent state."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np

from charlstm.config import SampleConfig
from charlstm.data.tokenizer import AnyTokenizer
from charlstm.errors import OptionError
from charlstm.generate.loop import Request, Rows, Stepper, texts
from charlstm.generate.options import Caps, check_sampling


class _Model(Protocol):
    """What a Session needs of its model (api.model.Model, which imports this module)."""

    tokenizer: AnyTokenizer

    def stepper(self) -> Stepper: ...


class Session:
    """A conversation with a model: text fed in and text generated continue one recurrent
    state, so each turn reads all the turns before it.

        chat = model.session(temp=0.8, seed=1)
        chat.feed("ROMEO: Good morrow.\n")
        for piece in chat.reply(length=300, stop=["\n\n"]):
            print(piece, end="")
    """

    def __init__(self, model: _Model, cfg: SampleConfig, rng: np.random.Generator) -> None:
        self.model, self.cfg, self.rng = model, cfg, rng
        self.stepper = model.stepper()  # either engine
        self.state = self.stepper.zero_state(1)
        self.logits: np.ndarray | None = None  # (1, V): the prediction after the last token

    def feed(self, text: str) -> list[str]:
        """Read `text` into the state (characters the model never saw are skipped; returned)."""
        if not isinstance(text, str):
            raise OptionError(f"{{text}} must be a text, not {type(text).__name__}")
        tok = self.model.tokenizer
        unknown = tok.unknown(text)
        ids = tok.encode(text, skip_unknown=True)
        if len(ids):
            self.logits = self.stepper.prime(ids.astype(np.int64), self.state).copy()
            self.state = self.stepper.state()
        return unknown

    def reply(
        self, length: int | None = None, stop: Sequence[str] | str | None = ()
    ) -> Iterator[str]:
        """Generate up to `length` tokens (default SampleConfig's), ending before the first of
        `stop`; what is generated becomes part of the state. A character begun by the last
        token is finished (at most 3 more byte tokens): the text goes on from whole text."""
        given = check_sampling(length=length, stop=stop, caps=Caps(default_length=self.cfg.length))
        if self.logits is None:
            self.feed("\n")  # nothing read yet: start as at the start of a line
        cfg = replace(self.cfg, length=given.cfg.length)
        req = Request(np.zeros(0, np.int64), cfg, stop=given.stop, whole=True, rng=self.rng)
        return self._reply(req)

    def _reply(self, req: Request) -> Iterator[str]:
        rows = Rows(self.stepper, self.model.tokenizer)
        rows.join(req, self.state, self.logits)
        try:
            for _, text in texts(rows):
                yield text
        finally:  # stopped early or not, the state holds everything generated
            if rows.unstepped is not None:  # every row finished: step the last token
                self.logits = self.stepper.step(rows.unstepped).copy()
            elif rows.live:
                assert rows.logits is not None
                self.logits = rows.logits.copy()
            if rows.unstepped is not None or rows.live:
                self.state = self.stepper.state()
