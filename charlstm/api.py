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
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

import numpy as np

from charlstm.config import (
    ADAPT,
    CHECKPOINTS,
    ENGINES,
    DynamicConfig,
    SampleConfig,
)
from charlstm.data.split import train_length
from charlstm.data.tokenizer import AnyTokenizer
from charlstm.errors import CharlstmError, OptionError
from charlstm.formats.checks import CheckpointError, resolve_checkpoint
from charlstm.formats.model_file import Portable, fresh_portable, portable_path, read_portable
from charlstm.formats.run_folder import RunFolder
from charlstm.generate.choose import seeded
from charlstm.generate.loop import Request, Rows, Stepper, generate, texts
from charlstm.generate.options import Caps, SamplingOptions, check_sampling
from charlstm.options import TrainOptions

if TYPE_CHECKING:  # these import torch: only the calls that need it load them
    import torch

    from charlstm.evaluation.exact import EvalResult
    from charlstm.generate.numpy_engine import NumpyStepper
    from charlstm.model.language_model import LanguageModel
    from charlstm.training.run import Report

# Training's events, as lines at INFO (and every progress event at DEBUG): a library user sees
# a run's life with logging.basicConfig(level=logging.INFO), nothing otherwise.
log = logging.getLogger("charlstm")


def train(
    corpus: list[str] | str | None = None,
    *,
    report: Report | None = None,
    should_stop: Callable[[], bool] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train a model on `corpus` (files, folders, "-" or a built-in name) with the options of
    `charlstm train` as keywords (budget="2m", hidden=512, resume="checkpoints/run", ...; see
    options.TrainOptions) and return the summary. `report(event, data)` sees what happens
    (print shows it all); the "charlstm" logger says it too, in lines at INFO (progress every
    10%, each validation). `should_stop()` returning True ends the run before its next step
    with last.pt saved."""
    if isinstance(corpus, str):
        corpus = [corpus]
    from charlstm.training import runs

    opts = TrainOptions(corpus=list(corpus or []), **options)
    return runs.train(opts, report=_logging(report), should_stop=should_stop or runs._never)


def _logging(report: Report | None) -> Report:
    """`report`, after each event is logged (see `log`)."""
    shown = {"progress": 0.0}

    def both(event: str, data: dict[str, Any]) -> None:
        line = _log_line(event, data)
        if event == "progress":
            due = data["progress"] >= shown["progress"] + 0.1
            log.log(logging.INFO if due else logging.DEBUG, "%s", line)
            if due:
                shown["progress"] = data["progress"] // 0.1 * 0.1
        elif line is not None:
            log.info("%s", line)
        if report is not None:
            report(event, data)

    return both


def _log_line(event: str, d: dict[str, Any]) -> str | None:
    """One event as one line of text (None: not worth a line)."""
    if event in ("message", "note", "stage"):
        return d.get("text") or d.get("message")
    if event == "tokenized":
        return f"{d['kind']} tokenizer: vocabulary {d['vocab_size']:,}, {d['tokens']:,} tokens"
    if event == "start":
        resumed = f", resumed at step {d['resumed_at']:,}" if d["resumed_at"] is not None else ""
        return (f"training {d['parameters']:,} parameters on {d['train_tokens']:,} tokens, "
                f"{d['tokens_per_step']:,} tokens a step, on {d['where']}{resumed}")  # fmt: skip
    if event == "progress":
        return (f"step {d['step']:,}: train loss {d['loss']:.4f}, {d['tokens_per_s']:,.0f} "
                f"tokens/s, {d['progress']:.0%} done")  # fmt: skip
    if event == "eval":
        val = "no validation split" if d["val_loss"] is None else f"val loss {d['val_loss']:.4f}"
        best = " (best)" if d.get("best") else ""
        return f"step {d['step']:,}: train loss {d['train_loss']:.4f}, {val}{best}"
    return None


def load(
    path: str | Path | None = None,
    *,
    checkpoints: str | Path = CHECKPOINTS,
    device: str | torch.device = "cpu",
    engine: str = "auto",
) -> Model:
    """The model in a run folder (its best.pt, else last.pt), a checkpoint file or a model file
    (.safetensors); with no path, the most recently written best.pt under `checkpoints`.

    `engine` says what generates: "numpy" from the checkpoint's model.safetensors, without
    importing torch (the CPU only); "torch"; "auto" (the default): numpy when that file is
    there, up to date, and the device is the CPU. Evaluating and tracing always use torch,
    loaded when first asked for."""
    if engine not in ENGINES:
        raise OptionError(f"{{engine}} must be {', '.join(ENGINES)}; got {_lit(engine)}")
    where = resolve_checkpoint(None if path is None else Path(path), Path(checkpoints))
    on_cpu = str(device) == "cpu"
    if engine == "numpy" and not on_cpu:
        raise OptionError(f"{{engine=numpy}} runs on the CPU, not {OptionError.literal(device)}; "
                          "use {engine=torch}")  # fmt: skip
    if where.suffix == ".safetensors":
        model = read_portable(where)
        if engine == "torch" or not on_cpu:
            return Model.from_portable(model, engine="torch").to(device)
        return Model.from_portable(model)
    if engine != "torch" and on_cpu:
        fresh = fresh_portable(where)
        if fresh is not None:
            return Model.from_portable(read_portable(fresh), checkpoint=where)
        if engine == "numpy":
            raise CheckpointError(
                f"--engine numpy needs an up-to-date {portable_path(where).name} beside '{where}'; "
                f"write it with: charlstm export {where}"
            )
    from charlstm.formats.checkpoint import read_checkpoint

    ckpt = read_checkpoint(where)
    meta = {k: v for k, v in ckpt.data.items() if k != "model"}
    return Model(ckpt.model().to(device), ckpt.tokenizer, where, meta)


def info(path: str | Path | None = None, *, checkpoints: str | Path = CHECKPOINTS) -> dict:
    """What a checkpoint or model file holds (as `charlstm info --json`), read without building
    the model."""
    where = resolve_checkpoint(None if path is None else Path(path), Path(checkpoints))
    if where.suffix == ".safetensors":
        from charlstm.formats.model_file import describe_portable

        data = describe_portable(read_portable(where))
    else:
        from charlstm.formats.checkpoint import describe, read_checkpoint

        data = describe(read_checkpoint(where).data, where)
    # Whether `charlstm train --resume` can continue the run: a last.pt with its training
    # state and the run's tokens.npy beside it, whichever of the run's files was described.
    last = where if data["resumable"] else RunFolder(where.parent).last
    data["resumable"] = last.is_file() and RunFolder(last.parent).tokens.is_file()
    return data


def export(
    path: str | Path | None = None,
    *,
    html: str | Path | None = None,
    onnx: str | Path | None = None,
    checkpoints: str | Path = CHECKPOINTS,
) -> list[Path]:
    """Write a checkpoint's model.safetensors (torch-free sampling), and with `html` a
    self-contained browser page, with `onnx` a one-step ONNX graph (export.py). Given a
    .safetensors file, only the page and the graph are written, and torch is not needed.
    Returns the files written."""
    from charlstm.export.convert import export as export_files

    where = resolve_checkpoint(None if path is None else Path(path), Path(checkpoints))
    return export_files(where, html=None if html is None else Path(html),
                        onnx=None if onnx is None else Path(onnx))  # fmt: skip


def random_seed() -> int:
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class EncodedText:
    """A text as a model's token ids, and what of it the model cannot read."""

    text: str
    ids: np.ndarray
    unknown: list[str]  # distinct characters a char model never saw (skipped), in order
    skipped_chars: int  # how many characters were skipped for that
    unknown_words: int  # words outside a word model's vocabulary (scored as the unknown token)


class Model:
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
        the style. The model itself is not changed (a copy learns, with torch)."""
        req, net = self.request(prime, dynamic=dynamic, **options)
        return (text for _, text in generate(self.stepper(net), self.tokenizer, req))

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
        return Request(prime_ids, given.cfg, seed, n=n, stop=given.stop), net

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
    ) -> list[str]:
        """`n` independent samples from the same prime, generated together as one batch; the
        options are generate()'s."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10_000:
            raise OptionError(f"{{n}} must be between 1 and 10,000, got {_lit(n)}", flags=_N)
        req, net = self.request(prime, n=n, **options)
        if n > 1 and req.cfg.length * n > 100_000_000:
            raise OptionError("{length} × {n} must be at most 100,000,000 tokens", flags=_N)
        rows: list[list[str]] = [[] for _ in range(n)]
        for i, text in generate(self.stepper(net), self.tokenizer, req):
            rows[i].append(text)
        return ["".join(row) for row in rows]

    def session(self, **options: Unpack[SamplingOptions]) -> Session:
        """A conversation (see Session) with generate()'s sampling options."""
        given = check_sampling(**options)
        seed = random_seed() if given.seed is None else given.seed
        return Session(self, given.cfg, seeded(seed))

    # ------------------------------------------------------------------------- scoring

    def encode_text(self, text: str) -> EncodedText:
        """A text to score as ids. A char model skips characters it never saw; a word model
        scores words outside its vocabulary as its unknown token (as word-level models are
        usually evaluated)."""
        tok = self.tokenizer
        if tok.kind == "word":
            ids = tok.encode(text, on_unknown="token")
            oov = int(np.isin(ids, tok.unknown_ids).sum())
            return EncodedText(text, ids, [], 0, oov)
        unknown = tok.unknown(text)
        skipped = sum(text.count(ch) for ch in unknown)
        return EncodedText(text, tok.encode(text, skip_unknown=True), unknown, skipped, 0)

    def evaluate(
        self,
        text: str | EncodedText,
        *,
        streams: int = 64,
        reset_every: int = 0,
        precision: str = "fp32",
        dynamic: DynamicConfig | bool | None = None,
    ) -> EvalResult:
        """Loss (nats per token), perplexity and bits per character of a held-out text, every
        token predicted once with the state carried (`streams` parallel streams, each warmed on
        the text before it); `reset_every` N scores blocks of N tokens from a zero state.

        `dynamic` (True, or a DynamicConfig) evaluates dynamically (Krause et al., 2018): one
        stream that learns from each segment after scoring it (dynamic.py); the result's
        `dynamic` says how. The weights are put back afterwards; the file is never touched."""
        from charlstm.data.tokens import spelled_chars
        from charlstm.device import autocast, check_precision
        from charlstm.evaluation.exact import EvalResult, evaluate_ids, predictions

        if dynamic is True:
            dynamic = DynamicConfig()
        if dynamic and reset_every:
            raise OptionError("{dynamic} reads the text as one stream; drop {reset_every}")
        if streams < 1:
            raise OptionError(f"{{streams}} must be at least 1, got {streams}")
        if reset_every < 0:
            raise OptionError(f"{{reset_every}} must be 0 (never) or more, got {reset_every}")
        check_precision(precision, self.device)
        if precision == "fp16":
            raise OptionError("evaluate takes {precision=fp32} or bf16")
        enc = text if isinstance(text, EncodedText) else self.encode_text(text)
        _need_two(enc.ids)
        chars = spelled_chars(self.tokenizer, enc.ids, None if self.tokenizer.kind == "char"
                              else len(enc.text))  # fmt: skip
        if dynamic:
            with autocast(self.device, precision):
                losses, how = self._dynamic_losses(enc.ids, dynamic)
            n = predictions(len(enc.ids))
            result = EvalResult(float(losses.sum()) / n, n, n if chars is None else chars,
                                dynamic=how)  # fmt: skip
        else:
            with autocast(self.device, precision):
                result = evaluate_ids(self.net, enc.ids, streams=streams, chars=chars,
                                      block=reset_every)  # fmt: skip
        return replace(result, skipped_chars=enc.skipped_chars, unknown_words=enc.unknown_words)

    def _dynamic_losses(
        self, ids: np.ndarray, cfg: DynamicConfig
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Every prediction's loss from one dynamic pass, and how it was made (for reports)."""
        from charlstm.evaluation.dynamic import dynamic_losses, gradient_scale

        train = self.training_ids() if cfg.rule == "rms" else None
        scale = gradient_scale(self.net, train, cfg) if train is not None else None
        source = None
        if cfg.rule == "rms":
            source = "training split" if train is not None else "the text read so far"
        how = {**asdict(cfg), "gradient_scale_from": source}
        if cfg.rule != "rms":
            del how["stat_tokens"], how["epsilon"]
        return dynamic_losses(self.net, ids, cfg, scale), how

    def score_lines(
        self, text: str | EncodedText, *, dynamic: DynamicConfig | bool | None = None
    ) -> list[dict[str, Any]]:
        """Per input line: {"line", "tokens", "nats", "bits_per_char"}, from one sequential pass
        that carries the state through the whole text (a line's newline counts in that line;
        the first token is not predicted). "line" is the line as written where the lines of
        the text and of the scored tokens match up (nothing skipped across a line). `dynamic`:
        the pass learns from the text as it reads it (see evaluate)."""
        from charlstm.evaluation.exact import score_lines, token_losses

        enc = text if isinstance(text, EncodedText) else self.encode_text(text)
        _need_two(enc.ids)
        if dynamic:
            cfg = DynamicConfig() if dynamic is True else dynamic
            losses, _ = self._dynamic_losses(enc.ids, cfg)
        else:
            losses = token_losses(self.net, enc.ids)
        pieces = [self.tokenizer.piece(int(t)) for t in enc.ids]
        scores = score_lines(pieces, losses)
        written = enc.text.split("\n")
        if written and written[-1] == "":
            written.pop()
        same = len(written) == len(scores)
        return [{**line.to_dict(), **({"line": written[i]} if same else {})}
                for i, line in enumerate(scores)]  # fmt: skip

    # ------------------------------------------------------------------------- looking inside

    def trace(self, text: str, *, layer: int | None = None, max_chars: int = 2000) -> Trace:
        """The activations of one layer (default: the last) at each character of `text`'s
        first `max_chars` known characters (visualize.trace); char models only."""
        import torch

        from charlstm.evaluation.visualize import trace

        if self.tokenizer.kind != "char":
            raise CharlstmError(
                f"visualize colours characters: it needs a char model, not {self.tokenizer.kind}"
            )
        n_layers = self.config.num_layers
        layer = n_layers - 1 if layer is None else layer
        if not 0 <= layer < n_layers:
            raise OptionError(f"{{layer}} must be between 0 and {n_layers - 1}, got {layer}")
        if max_chars < 1:
            raise OptionError(f"{{max_chars}} must be at least 1, got {max_chars}")
        unknown = set(self.tokenizer.unknown(text))
        body = "".join(ch for ch in text if ch not in unknown) if unknown else text
        body = body[:max_chars]
        if not body:
            raise CharlstmError("nothing to visualize: the text has no characters the model knows")
        ids = torch.from_numpy(self.tokenizer.encode(body).astype("int64"))
        return Trace(body, layer, trace(self.net, ids, layer=layer))


class Session:
    """A conversation with a model: text fed in and text generated continue one recurrent
    state, so each turn reads all the turns before it.

        chat = model.session(temp=0.8, seed=1)
        chat.feed("ROMEO: Good morrow.\n")
        for piece in chat.reply(length=300, stop=["\n\n"]):
            print(piece, end="")
    """

    def __init__(self, model: Model, cfg: SampleConfig, rng: np.random.Generator) -> None:
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


# The options whose flag is not their keyword with dashes.
_N = {"n": "--num-samples"}


@dataclass(frozen=True)
class Trace:
    text: str  # the characters traced
    layer: int
    activations: dict[str, np.ndarray]  # kind -> (T, H): hidden, cell, forget, ...


def _lit(value: object) -> str:
    """A value the caller gave, quoted, as literal text in an OptionError."""
    return OptionError.literal(repr(value) if isinstance(value, str) else value)


def _need_two(ids: np.ndarray) -> None:
    if len(ids) < 2:
        raise CharlstmError("the text is too short to evaluate: it needs at least 2 known tokens")


# ------------------------------------------------------------------------ what the CLI does too
# Thin doors for what `charlstm` does besides loading and sampling, so that cli/ reaches the
# library only through this module (and serve/, which is built on it). Each imports what it
# needs when called (--help stays light).


def train_options(
    opts: TrainOptions,
    *,
    report: Report | None = None,
    should_stop: Callable[[], bool] | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """`train` for options already built (and so checked before torch loads); the budget counts
    from `started` (a time.perf_counter(), e.g. the process's start), else from now."""
    from charlstm.training import runs

    return runs.train(opts, report=report or runs._ignore,
                      should_stop=should_stop or runs._never, started=started)  # fmt: skip


def read_text(sources: list[str], *, encoding: str = "utf-8", errors: str = "strict") -> str:
    """The text of files, folders, "-" (stdin) or a built-in corpus, as `evaluate` reads it."""
    from charlstm.config import CORPORA
    from charlstm.data.corpus import load_corpus

    return load_corpus(sources, cache_dir=CORPORA, encoding=encoding, errors=errors).text


def torch_device(name: str = "auto") -> torch.device:
    """The torch device a name means: "auto" (a CUDA GPU, else Apple's MPS, else the CPU),
    cpu, cuda, cuda:N or mps; an OptionError for one this machine lacks."""
    from charlstm.device import resolve_device

    return resolve_device(name)


def use_threads(threads: int = 0, streams: int = 1) -> None:
    """torch on `threads` CPU threads (0: chosen for `streams` parallel streams)."""
    from charlstm.device import set_threads

    set_threads(threads, streams)


def list_runs(checkpoints: str | Path = CHECKPOINTS) -> list[Any]:
    """The runs under `checkpoints`, newest first (formats.run_folder.RunRecord)."""
    from charlstm.formats.run_folder import list_runs as found

    return found(Path(checkpoints))


def delete_run(name: str, *, checkpoints: str | Path = CHECKPOINTS) -> int:
    """Delete a run's folder; the bytes freed."""
    from charlstm.formats.run_folder import delete_run as delete

    return delete(Path(checkpoints), name)


def slim_run(name: str, *, checkpoints: str | Path = CHECKPOINTS) -> int:
    """Keep only a run's best.pt (delete what only resuming needs); the bytes freed."""
    from charlstm.formats.run_folder import slim_run as slim

    return slim(Path(checkpoints), name)


def check_coder() -> None:
    """A CharlstmError unless the entropy coder compress needs is installed."""
    from charlstm.compress.codec import require_constriction

    require_constriction()


def run_age(seconds_since_epoch: float) -> str:
    """How long ago a time was, as `charlstm runs` shows it ("3 h")."""
    from charlstm.formats.run_folder import age

    return age(seconds_since_epoch)


def codec(model: Model, engine: str = "torch") -> Any:
    """The lossless coder over a loaded model (compress.codec.Codec: compress, decompress)."""
    from charlstm.compress.codec import Codec

    return Codec(model.net, model.tokenizer, engine=engine)


def compressed_header(blob: bytes) -> Any:
    """What a compressed file's header says (compress.codec.Header); a CharlstmError if `blob`
    is no compressed file."""
    from charlstm.compress.codec import read_header

    return read_header(blob)


def units_tracking(activations: dict[str, np.ndarray], text: str, top: int = 5) -> list[dict]:
    """The units whose values follow simple properties of `text` best (quotes, brackets, line
    position, word starts): kind, unit, property, correlation."""
    from charlstm.evaluation.visualize import find_units, properties

    return find_units(activations, properties(text), top=top)


__all__ = ["ENGINES", "EncodedText", "Model", "Session", "Trace", "export", "info", "load", "train"]
