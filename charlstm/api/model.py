"""Model: a trained model with its tokenizer, ready to generate, score and trace text (on
either engine), and the checks of what it is asked that need the model (check_adapt)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

import numpy as np

from charlstm.api.scoring import Scoring
from charlstm.api.session import Session
from charlstm.config import (
    ADAPT,
    DEFAULT_ITEMS,
    ITEM_TEMPERATURE,
    MAX_ITEMS,
    MAX_SAMPLES,
    DynamicConfig,
    check_count,
)
from charlstm.data.items import SEPARATORS
from charlstm.data.split import train_length
from charlstm.data.tokenizer import AnyTokenizer
from charlstm.errors import CharlstmError, OptionError
from charlstm.formats.model_file import Portable
from charlstm.formats.run_folder import RunFolder
from charlstm.generate.beam import Beam, beam_search
from charlstm.generate.choose import seeded
from charlstm.generate.items import Drawn, draw_items
from charlstm.generate.logprobs import Token
from charlstm.generate.loop import Request, Rows, Stepper, generate, texts
from charlstm.generate.options import SamplingOptions, check_beam, check_sampling, constraint

if TYPE_CHECKING:  # these import torch: only the calls that need it load them
    import torch

    from charlstm.generate.numpy_engine import NumpyStepper
    from charlstm.model.language_model import LanguageModel


def random_seed() -> int:
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF


class Model(Scoring):
    """A trained model with its tokenizer, ready to generate, score and trace text."""

    def __init__(
        self,
        net: LanguageModel | None,
        tokenizer: AnyTokenizer,
        path: Path,
        meta: dict[str, Any],
        *,
        portable: Portable | None = None,
        checkpoint: Path | None = None,
    ) -> None:
        assert net is not None or portable is not None, "a model needs its weights"
        self._net = net
        self.tokenizer = tokenizer
        self.path = path  # the checkpoint file it came from (or its model file alone)
        self.meta = meta  # the checkpoint's other entries: configs, metrics, corpus, step, ...
        # The model file's weights when numpy generates; None when torch does.
        self.portable = portable
        # The checkpoint a numpy-engine model belongs to: torch's model is built from it when
        # first needed (evaluate, trace), else from the model file itself.
        self._checkpoint = checkpoint
        self._config = net.cfg if net is not None else portable.config  # type: ignore[union-attr]
        self._stepper: NumpyStepper | None = None

    @classmethod
    def from_portable(
        cls, model: Portable, *, checkpoint: Path | None = None, engine: str = "numpy"
    ) -> Model:
        """A model read from a model file; `engine` "torch" builds torch's model from it now."""
        assert model.path is not None
        path = checkpoint if checkpoint is not None else model.path
        meta = {"model_config": asdict(model.config), **model.run}
        out = cls(None, model.tokenizer, path, meta, portable=model, checkpoint=checkpoint)
        if engine == "torch":
            out.portable = None
            out._net = out._build_net(model)
        return out

    @property
    def engine(self) -> str:
        """What generates: "numpy" or "torch"."""
        return "numpy" if self.portable is not None else "torch"

    @property
    def net(self) -> LanguageModel:
        """torch's model (imports torch): built from the checkpoint, or the model file, when
        first asked for."""
        if self._net is None:
            self._net = self._build_net(self.portable)
        return self._net

    def _build_net(self, model: Portable | None) -> LanguageModel:
        if self._checkpoint is not None:
            from charlstm.formats.checkpoint import read_checkpoint

            return read_checkpoint(self._checkpoint).model()
        from charlstm.export.convert import model_from_portable

        assert model is not None
        return model_from_portable(model)

    @property
    def config(self) -> Any:
        return self._config

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> Model:
        """Move torch's model to `device`; on any device but the CPU, torch generates."""
        if str(device) != "cpu":
            self.portable = None
        if self._net is not None or self.portable is None:
            self.net.to(device)
        return self

    # ------------------------------------------------------------------------- generating

    def encode_prime(self, prime: str | None, on_unknown: str = "error") -> np.ndarray:
        """The prime's ids (P,), P ≥ 1. Tokens the model never saw are an error naming them, or
        dropped (on_unknown="skip"); no prime starts after a newline, as at a line start."""
        if on_unknown not in ("error", "skip"):
            raise OptionError(f"{{on_unknown}} must be error or skip, got {_lit(on_unknown)}")
        if prime is not None and not isinstance(prime, str):
            raise OptionError(f"{{prime}} must be a text or None, not {type(prime).__name__}")
        tok = self.tokenizer
        if prime and tok.kind == "word" and prime[0] not in " \n":
            # Words are stored with the space before them, so a prime's first word is read as
            # it occurs after a space, when the vocabulary knows it only that way.
            if len(tok.unknown(" " + prime)) < len(tok.unknown(prime)):
                prime = " " + prime
        if prime:
            unknown = tok.unknown(prime)
            if unknown and on_unknown == "error":
                what = "words" if tok.kind == "word" else "characters"
                shown = " ".join(unknown[:10]) if tok.kind == "word" else "".join(unknown[:20])
                raise OptionError(
                    f"the prime text has {what} the model never saw: {_lit(shown)}; "
                    "remove them or pass {on_unknown=skip}",
                    code=1,
                )
            ids = tok.encode(prime, skip_unknown=True)
            if len(ids):
                return ids.astype(np.int64)
        newline = tok.encode("\n", skip_unknown=True)
        return np.array([int(newline[-1]) if len(newline) else 0], dtype=np.int64)

    def generate(
        self,
        prime: str | None = None,
        *,
        dynamic: DynamicConfig | None = None,
        **options: Unpack[SamplingOptions],
    ) -> Iterator[str]:
        """The generated text, piece by piece as it is made (the prime not included), ending
        before the first of the `stop` texts if one comes. The options (length, temp, top_k,
        top_p, greedy, seed, stop, on_unknown, adapt: generate/options.SamplingOptions) left
        out take SampleConfig's defaults; a seed makes it reproducible. Bad options and a
        prime the model cannot read raise here, before anything is generated.

        `adapt` N first reads the prime N times learning from it, with dynamic evaluation's
        updates (`dynamic`; default: config.ADAPT's segments and decay): a page of text steers
        the style. The model itself is not changed (a copy learns, with torch).

        `logprobs` K (0 to 20) yields Tokens instead of texts: each generated token's text
        (they add up to the text), its log-probability under the distribution it was drawn
        from, and the K most likely tokens with theirs (generate/logprobs.py).

        `regex` (or `json_schema`: a dict, its JSON text or a Path to its file) keeps the text
        to what matches it (generate/constrain.py): it ends when it matches and the model
        chooses to end; `finish_reason` then says "stop", or "length" if it was cut first."""
        req, net = self.request(prime, dynamic=dynamic, **options)
        if req.logprobs is not None:
            return self._tokens(req, net)
        pieces = (text for _, text in generate(self.stepper(net), self.tokenizer, req))
        return Generated(pieces, req)

    def _tokens(self, req: Request, net: LanguageModel | None) -> Iterator[Token]:
        """The request's tokens with their log-probabilities, every row's, as they come."""
        stepper = self.stepper(net)
        logits = stepper.prime(req.prime_ids)
        rows = Rows(stepper, self.tokenizer)
        rows.join(req, stepper.state(), logits)
        return (item for _, item in texts(rows, tokens=True) if isinstance(item, Token))

    def request(
        self,
        prime: str | None,
        *,
        n: int = 1,
        dynamic: DynamicConfig | None = None,
        **options: Unpack[SamplingOptions],
    ) -> tuple[Request, LanguageModel | None]:
        """What generating needs, every option (generate()'s) checked (generate/options.py):
        the request (a random seed when none is given), and with `adapt` a copy of torch's
        network that has learnt the prime (else None: the model's own engine generates)."""
        given = check_sampling(**options)
        on_unknown, adapt = options.get("on_unknown", "error"), options.get("adapt", 0)
        prime_ids = self.encode_prime(prime, on_unknown)
        check_adapt(adapt, prime, prime_ids)
        net = self.adapted(prime_ids, adapt, dynamic) if adapt else None
        seed = random_seed() if given.seed is None else given.seed
        auto = constraint(given, self.tokenizer)  # compiled once per pattern, then kept
        req = Request(prime_ids, given.cfg, seed, n=n, stop=given.stop, logprobs=given.logprobs,
                      constraint=auto)  # fmt: skip
        return req, net

    def stepper(self, net: LanguageModel | None = None) -> Stepper:
        """What runs the model a token at a time (generate/loop.py): the numpy engine's, or
        torch's over `net` (default: the model's own)."""
        if self.portable is not None and net is None:
            from charlstm.generate.numpy_engine import NumpyStepper

            if self._stepper is None:  # the table and joined matrices, made once
                self._stepper = NumpyStepper(self.portable)
            return self._stepper.fork()
        from charlstm.generate.torch_engine import TorchStepper

        return TorchStepper(self.net if net is None else net)

    def adapted(
        self, ids: np.ndarray, passes: int = 1, dynamic: DynamicConfig | None = None
    ) -> LanguageModel:
        """A copy of the network that has read `ids` `passes` times learning from them
        (dynamic.adapted), by default with config.ADAPT's settings. The rms rule takes its
        gradient scale from the training split beside the checkpoint, else from `ids`."""
        from charlstm.evaluation.dynamic import adapted, gradient_scale

        cfg = dynamic or DynamicConfig(**ADAPT)
        scale = None
        if cfg.rule == "rms":
            train = self.training_ids()
            scale = gradient_scale(self.net, train if train is not None else ids, cfg)
        return adapted(self.net, ids, cfg, scale, passes)

    def training_ids(self) -> np.ndarray | None:
        """The training split of the run this checkpoint belongs to (its tokens.npy), memory-
        mapped; None when the checkpoint is not in its run folder."""
        tokens = RunFolder(self.path.parent).tokens
        corpus = self.meta.get("corpus") or {}
        if not tokens.is_file():
            return None
        try:
            ids = np.load(tokens, mmap_mode="r")
        except (OSError, ValueError):
            return None
        if ids.ndim != 1 or (len(ids) and int(ids.max()) >= self.config.vocab_size):
            return None
        n_train = corpus.get("n_train")
        if n_train is None:
            fraction = (self.meta.get("train_config") or {}).get("val_fraction", 0.1)
            n_train = train_length(len(ids), fraction)
        return ids[:n_train] if n_train >= 2 else None

    def samples(
        self, n: int, prime: str | None = None, **options: Unpack[SamplingOptions]
    ) -> Samples:
        """`n` independent samples from the same prime, generated together as one batch; the
        options are generate()'s (the list's `finish_reasons` are each sample's). With
        `logprobs`, each sample is its list of Tokens."""
        check_count(n, MAX_SAMPLES, _N["n"])
        req, net = self.request(prime, n=n, **options)
        if n > 1 and req.cfg.length * n > 100_000_000:
            raise OptionError("{length} × {n} must be at most 100,000,000 tokens", flags=_N)
        if req.logprobs is not None:
            tokens: list[list[Token]] = [[] for _ in range(n)]
            for token in self._tokens(req, net):
                tokens[token.index].append(token)
            return Samples(tokens, req.reasons)
        rows: list[list[str]] = [[] for _ in range(n)]
        for i, text in generate(self.stepper(net), self.tokenizer, req):
            rows[i].append(text)
        return Samples(["".join(row) for row in rows], req.reasons)

    def beam(
        self,
        prime: str | None,
        k: int,
        length: int | None = None,
        *,
        stop: Sequence[str] | str | None = None,
        on_unknown: str = "error",
    ) -> list[Beam]:
        """The `k` most likely continuations of the prime, best first (beam search,
        generate/beam.py): `length` tokens each (None: SampleConfig's), or up to the first of
        the `stop` texts (not included). Each Beam has its text, its logprob (the natural log
        of its tokens' probability under the model, a stop text's tokens included), its ids
        and why it ended. Deterministic: no temperature, no seed."""
        given = check_sampling(length=length, stop=stop, on_unknown=on_unknown)
        k = check_beam(k)
        ids = self.encode_prime(prime, on_unknown)
        stops = given.stop
        if self.item_kind:  # an item ends at its separator
            stops = (SEPARATORS[self.item_kind], *stops)
        return beam_search(self.stepper(), self.tokenizer, ids, k, given.cfg.length, stops)
    @property
    def item_kind(self) -> str | None:
        """How an item model's list was cut ("lines": train --items), else None."""
        return (self.meta.get("train_config") or {}).get("items")

    def items(
        self, n: int = DEFAULT_ITEMS, *, novel: bool = False, **options: Unpack[SamplingOptions]
    ) -> Drawn:
        """`n` items of an item model, each from the start (generate/items.py); `novel`: only
        items not in the training list (the run's items.npy) and not drawn already, giving up
        after MAX_DRAWS candidates per item (the result's `short`). The options are
        generate()'s (the temperature: config.ITEM_TEMPERATURE unless given); a stop text given
        ends an item early."""
        kind = self.item_kind
        if kind is None:
            raise OptionError("{items} needs a model trained with --items (this one learnt "
                              "running text)", flags=_ITEMS)  # fmt: skip
        check_count(n, MAX_ITEMS, _ITEMS["n"])
        hashes = None
        if novel:
            try:
                hashes = np.load(RunFolder(self.path.parent).items)
            except (OSError, ValueError):
                raise CharlstmError(f"{{novel}} needs the training list's items.npy beside "
                                    f"'{self.path}' (train writes it)") from None  # fmt: skip
        stops = check_sampling(**options).stop
        if options.get("temp") is None and not options.get("greedy"):
            options = {**options, "temp": ITEM_TEMPERATURE}
        req, net = self.request(None, **{**options, "stop": (SEPARATORS[kind], *stops)})
        return draw_items(self.stepper(net), self.tokenizer, req, n, hashes, novel)

    def session(self, **options: Unpack[SamplingOptions]) -> Session:
        """A conversation (see Session) with generate()'s sampling options."""
        given = check_sampling(**options)
        if given.logprobs is not None:
            raise OptionError("a session's replies are text: {logprobs} is for generate")
        if given.pattern is not None:
            raise OptionError(f"a session's replies are free text; drop {{{given.pattern_from}}}")
        seed = random_seed() if given.seed is None else given.seed
        return Session(self, given.cfg, seeded(seed))


def check_adapt(adapt: int, prime: str | None, prime_ids: np.ndarray) -> None:
    """`adapt` passes over a prime read as `prime_ids` (Model.encode_prime) can be made: a whole
    number of passes in range, and a prime of at least two tokens (one prediction to learn)."""
    check_sampling(adapt=adapt)  # a whole number of passes in range
    if adapt and not prime:
        raise OptionError("{adapt} learns from the prime: give a {prime} text to learn from")
    if adapt and len(prime_ids) < 2:
        raise OptionError(
            f"{{adapt}} learns from the prime: it needs at least 2 tokens the model knows, and "
            f"{_lit(prime)} reads as {len(prime_ids)}"
        )


class Generated(Iterator[str]):
    """generate()'s text, piece by piece as it is made; once it is all read, `finish_reason`
    says why it ended: "stop" (a stop text, or a pattern's match that the model ended) or
    "length" (its tokens were all made)."""

    def __init__(self, pieces: Iterator[str], request: Request) -> None:
        self._pieces, self.request = pieces, request

    def __next__(self) -> str:
        return next(self._pieces)

    @property
    def finish_reason(self) -> str | None:
        return self.request.reasons[0]


class Samples(list):  # type: ignore[type-arg]
    """samples()'s texts (with `logprobs`, each sample's list of Tokens), and why each ended
    (Generated.finish_reason's values)."""

    def __init__(self, texts: list[Any], finish_reasons: list[str | None]) -> None:
        super().__init__(texts)
        self.finish_reasons = finish_reasons


# The options whose flag is not their keyword with dashes.
_N = {"n": "--num-samples"}
_ITEMS = {"n": "--items"}


def _lit(value: object) -> str:
    """A value the caller gave, quoted, as literal text in an OptionError."""
    return OptionError.literal(repr(value) if isinstance(value, str) else value)
