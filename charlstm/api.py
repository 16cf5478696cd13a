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

import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charlstm import runs
from charlstm.checkpoint import describe, read_checkpoint, resolve_checkpoint
from charlstm.choice import MAX_SEED, seeded
from charlstm.config import ADAPT, CHECKPOINTS, DynamicConfig, SampleConfig, TrainOptions
from charlstm.errors import CharlstmError, UsageError
from charlstm.evaluate import EvalResult, evaluate_ids, score_lines, token_losses
from charlstm.model import LanguageModel
from charlstm.sample import generate
from charlstm.tokenizer import AnyTokenizer
from charlstm.tokens import spelled_chars
from charlstm.training import Report


def train(
    corpus: list[str] | str | None = None,
    *,
    report: Report | None = None,
    should_stop: Callable[[], bool] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train a model on `corpus` (files, folders, "-" or a built-in name) with the options of
    `charlstm train` as keywords (budget="2m", hidden=512, resume="checkpoints/run", ...; see
    config.TrainOptions) and return the summary. `report(event, data)` sees what happens
    (print shows it all); `should_stop()` returning True ends the run before its next step
    with last.pt saved."""
    if isinstance(corpus, str):
        corpus = [corpus]
    opts = TrainOptions(corpus=list(corpus or []), **options)
    return runs.train(opts, report=report or runs._ignore, should_stop=should_stop or runs._never)


def load(
    path: str | Path | None = None,
    *,
    checkpoints: str | Path = CHECKPOINTS,
    device: str | torch.device = "cpu",
) -> Model:
    """The model in a run folder (its best.pt, else last.pt) or a checkpoint file; with no
    path, the most recently written best.pt under `checkpoints`."""
    where = resolve_checkpoint(None if path is None else Path(path), Path(checkpoints))
    ckpt = read_checkpoint(where)
    meta = {k: v for k, v in ckpt.data.items() if k != "model"}
    return Model(ckpt.model().to(device), ckpt.tokenizer, where, meta)


def info(path: str | Path | None = None, *, checkpoints: str | Path = CHECKPOINTS) -> dict:
    """What a checkpoint holds (as `charlstm info --json`), read without building the model."""
    where = resolve_checkpoint(None if path is None else Path(path), Path(checkpoints))
    return describe(read_checkpoint(where).data, where)


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
        self, net: LanguageModel, tokenizer: AnyTokenizer, path: Path, meta: dict[str, Any]
    ) -> None:
        self.net = net
        self.tokenizer = tokenizer
        self.path = path  # the checkpoint file it came from
        self.meta = meta  # the checkpoint's other entries: configs, metrics, corpus, step, ...

    @property
    def config(self) -> Any:
        return self.net.cfg

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> Model:
        self.net.to(device)
        return self

    # ------------------------------------------------------------------------- generating

    def encode_prime(self, prime: str | None, on_unknown: str = "error") -> torch.Tensor:
        """The prime's ids (P,), P ≥ 1. Tokens the model never saw are an error naming them, or
        dropped (on_unknown="skip"); no prime starts after a newline, as at a line start."""
        if on_unknown not in ("error", "skip"):
            raise UsageError(f"--on-unknown must be error or skip, got {on_unknown!r}")
        tok = self.tokenizer
        if prime:
            unknown = tok.unknown(prime)
            if unknown and on_unknown == "error":
                what = "words" if tok.kind == "word" else "characters"
                shown = " ".join(unknown[:10]) if tok.kind == "word" else "".join(unknown[:20])
                raise CharlstmError(
                    f"the prime text has {what} the model never saw: {shown!r}; "
                    "remove them or pass --on-unknown skip"
                )
            ids = tok.encode(prime, skip_unknown=True)
            if len(ids):
                return torch.from_numpy(ids.astype("int64"))
        newline = tok.encode("\n", skip_unknown=True)
        return torch.tensor([int(newline[-1]) if len(newline) else 0])

    def generate(
        self,
        prime: str | None = None,
        *,
        length: int | None = None,
        temp: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
        seed: int | None = None,
        on_unknown: str = "error",
        adapt: int = 0,
        dynamic: DynamicConfig | None = None,
    ) -> Iterator[str]:
        """The generated text, piece by piece as it is made (the prime not included). Options
        left at None take SampleConfig's defaults; a seed makes it reproducible. Bad options
        and a prime the model cannot read raise here, before anything is generated.

        `adapt` N first reads the prime N times learning from it, with dynamic evaluation's
        updates (`dynamic`; default: config.ADAPT's segments and decay): a page of text steers
        the style. The model itself is not changed (a copy learns)."""
        job = self._job(prime, length, temp, top_k, top_p, greedy, seed, on_unknown, adapt,
                        dynamic)  # fmt: skip
        return self._pieces(*job)

    def _job(
        self,
        prime: str | None,
        length: int | None = None,
        temp: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
        seed: int | None = None,
        on_unknown: str = "error",
        adapt: int = 0,
        dynamic: DynamicConfig | None = None,
    ) -> tuple[torch.Tensor, SampleConfig, np.random.Generator, LanguageModel]:
        """What generating needs, every option checked: the prime's ids, the config, the RNG,
        and the network to generate with (a copy that has learnt the prime, with `adapt`)."""
        cfg = SampleConfig.build(length, temp, top_k, top_p, greedy=greedy)
        if not 0 <= adapt <= 1000:
            raise UsageError(f"--adapt must be between 0 and 1,000 passes, got {adapt}")
        prime_ids, generator = self.encode_prime(prime, on_unknown), _generator(seed)
        net = self.net
        if adapt:
            if len(prime_ids) < 2:
                raise UsageError("--adapt learns from the prime: give a --prime text to learn")
            net = self.adapted(prime_ids.numpy(), adapt, dynamic)
        return prime_ids, cfg, generator, net

    def adapted(
        self, ids: np.ndarray, passes: int = 1, dynamic: DynamicConfig | None = None
    ) -> LanguageModel:
        """A copy of the network that has read `ids` `passes` times learning from them
        (dynamic.adapted), by default with config.ADAPT's settings. The rms rule takes its
        gradient scale from the training split beside the checkpoint, else from `ids`."""
        from charlstm.dynamic import adapted, gradient_scale

        cfg = dynamic or DynamicConfig(**ADAPT)
        scale = None
        if cfg.rule == "rms":
            train = self.training_ids()
            scale = gradient_scale(self.net, train if train is not None else ids, cfg)
        return adapted(self.net, ids, cfg, scale, passes)

    def training_ids(self) -> np.ndarray | None:
        """The training split of the run this checkpoint belongs to (its tokens.npy), memory-
        mapped; None when the checkpoint is not in its run folder."""
        tokens = self.path.parent / "tokens.npy"
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
            n_train = int(len(ids) * (1.0 - fraction)) if fraction > 0 else len(ids)
        return ids[:n_train] if n_train >= 2 else None

    def _pieces(
        self,
        prime_ids: torch.Tensor,
        cfg: SampleConfig,
        generator: np.random.Generator,
        net: LanguageModel,
    ) -> Iterator[str]:
        decoder = self.tokenizer.stream_decoder()  # holds back a character split across tokens
        for token in generate(net, prime_ids, cfg, generator):
            piece = decoder.push(int(token[0]))
            if piece:
                yield piece
        tail = decoder.flush()
        if tail:
            yield tail

    def samples(self, n: int, prime: str | None = None, **options: Any) -> list[str]:
        """`n` independent samples from the same prime, generated together as one batch; the
        options are generate()'s."""
        if not 1 <= n <= 10_000:
            raise UsageError(f"--num-samples must be between 1 and 10,000, got {n}")
        prime_ids, cfg, generator, net = self._job(prime, **options)
        if n > 1 and cfg.length * n > 100_000_000:
            raise UsageError("--length × --num-samples must be at most 100,000,000 tokens")
        rows: list[list[int]] = [[] for _ in range(n)]
        for tokens in generate(net, prime_ids, cfg, generator, batch=n):  # (n,)
            for row, token in zip(rows, tokens.tolist(), strict=True):
                row.append(token)
        return [self.tokenizer.decode(row) for row in rows]

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
        from charlstm.device import autocast, check_precision

        if dynamic is True:
            dynamic = DynamicConfig()
        if dynamic and reset_every:
            raise UsageError("--dynamic reads the text as one stream; drop --reset-every")
        if streams < 1:
            raise UsageError(f"--streams must be at least 1, got {streams}")
        if reset_every < 0:
            raise UsageError(f"--reset-every must be 0 (never) or more, got {reset_every}")
        check_precision(precision, self.device)
        if precision == "fp16":
            raise UsageError("evaluate takes --precision fp32 or bf16")
        enc = text if isinstance(text, EncodedText) else self.encode_text(text)
        _need_two(enc.ids)
        chars = spelled_chars(self.tokenizer, enc.ids, None if self.tokenizer.kind == "char"
                              else len(enc.text))  # fmt: skip
        if dynamic:
            with autocast(self.device, precision):
                losses, how = self._dynamic_losses(enc.ids, dynamic)
            n = len(enc.ids) - 1
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
        from charlstm.dynamic import dynamic_losses, gradient_scale

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
        from charlstm.visualize import trace

        if self.tokenizer.kind != "char":
            raise CharlstmError(
                f"visualize colours characters: it needs a char model, not {self.tokenizer.kind}"
            )
        n_layers = self.net.cfg.num_layers
        layer = n_layers - 1 if layer is None else layer
        if not 0 <= layer < n_layers:
            raise UsageError(f"--layer must be between 0 and {n_layers - 1}, got {layer}")
        if max_chars < 1:
            raise UsageError(f"--max-chars must be at least 1, got {max_chars}")
        unknown = set(self.tokenizer.unknown(text))
        body = "".join(ch for ch in text if ch not in unknown) if unknown else text
        body = body[:max_chars]
        if not body:
            raise CharlstmError("nothing to visualize: the text has no characters the model knows")
        ids = torch.from_numpy(self.tokenizer.encode(body).astype("int64"))
        return Trace(body, layer, trace(self.net, ids, layer=layer))


@dataclass(frozen=True)
class Trace:
    text: str  # the characters traced
    layer: int
    activations: dict[str, np.ndarray]  # kind -> (T, H): hidden, cell, forget, ...


def _generator(seed: int | None) -> np.random.Generator:
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed must be between 0 and {MAX_SEED:,}, got {seed}")
    return seeded(random_seed() if seed is None else seed)


def _need_two(ids: np.ndarray) -> None:
    if len(ids) < 2:
        raise CharlstmError("the text is too short to evaluate: it needs at least 2 known tokens")


__all__ = ["EncodedText", "Model", "Trace", "info", "load", "train"]
