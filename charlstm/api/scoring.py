"""What a model says about a given text: its loss (static or dynamic), each line's and each
token's score, and what its units and its attention head do there. Model (api/model.py) takes
these methods from Scoring; the work itself is in charlstm.evaluation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from charlstm.config import DynamicConfig
from charlstm.data.tokenizer import AnyTokenizer
from charlstm.errors import CharlstmError, OptionError
from charlstm.generate.logprobs import Token

if TYPE_CHECKING:  # these import torch: only the calls that need it load them
    import torch

    from charlstm.evaluation.exact import EvalResult
    from charlstm.evaluation.focus import Focus
    from charlstm.model.language_model import LanguageModel


@dataclass(frozen=True)
class EncodedText:
    """A text as a model's token ids, and what of it the model cannot read."""

    text: str
    ids: np.ndarray
    unknown: list[str]  # distinct characters a char model never saw (skipped), in order
    skipped_chars: int  # how many characters were skipped for that
    unknown_words: int  # words outside a word model's vocabulary (scored as the unknown token)


class Scoring:
    """The scoring and tracing half of Model (a mixin: Model holds the state it reads)."""

    tokenizer: AnyTokenizer
    net: LanguageModel
    device: torch.device
    config: Any

    def training_ids(self) -> np.ndarray | None: ...  # Model's: the training split's ids

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

    def token_logprobs(self, text: str | EncodedText, *, top: int = 0) -> list[Token]:
        """Each token of `text` (as encode_text reads it) with its log-probability from one
        sequential pass from a zero state, and the `top` most likely tokens at that point;
        the first token, which nothing predicts, has None for both. The tokens' texts add up
        to the text read (a byte-level token that begins a character has "")."""
        from charlstm.evaluation.exact import token_logprobs

        enc = text if isinstance(text, EncodedText) else self.encode_text(text)
        chosen, top_ids, top_lps = token_logprobs(self.net, enc.ids, top)
        decoder, piece = self.tokenizer.stream_decoder(), self.tokenizer.piece
        out = []
        for i, token in enumerate(enc.ids):
            shown = decoder.push(int(token))
            if i == 0:
                out.append(Token(0, shown, None, None))
                continue
            alternatives = tuple((piece(int(t)), float(v))
                                 for t, v in zip(top_ids[i - 1], top_lps[i - 1], strict=True))
            out.append(Token(0, shown, float(chosen[i - 1]), alternatives))  # fmt: skip
        return out

    # ------------------------------------------------------------------------- looking inside

    def trace(self, text: str, *, layer: int | None = None, max_chars: int = 2000) -> Trace:
        """The activations of one layer (default: the last) at each character of `text`'s
        first `max_chars` known characters (visualize.trace); char models only."""

        from charlstm.evaluation.visualize import trace

        if self.tokenizer.kind != "char":
            raise CharlstmError(
                f"visualize colours characters: it needs a char model, not {self.tokenizer.kind}"
            )
        n_layers = self.config.num_layers
        layer = n_layers - 1 if layer is None else layer
        if not 0 <= layer < n_layers:
            raise OptionError(f"{{layer}} must be between 0 and {n_layers - 1}, got {layer}")
        body, ids = self._known(text, max_chars)
        return Trace(body, layer, trace(self.net, ids, layer=layer))

    def focus(self, text: str, *, max_chars: int = 2000) -> tuple[str, Focus]:
        """Where --attention's head looks at each character of `text`'s first `max_chars` known
        characters (evaluation/focus.py): the text read and its Focus; char models only."""
        from charlstm.evaluation.focus import focus

        if not self.config.attention:
            raise OptionError("{kind} attention needs a model trained with {attention}")
        if self.tokenizer.kind != "char":
            raise CharlstmError(f"visualize shows characters: not a {self.tokenizer.kind} model")
        body, ids = self._known(text, max_chars)
        return body, focus(self.net, ids)

    def _known(self, text: str, max_chars: int) -> tuple[str, Any]:
        """`text`'s first `max_chars` characters the model knows, and their ids (a tensor)."""
        import torch

        if max_chars < 1:
            raise OptionError(f"{{max_chars}} must be at least 1, got {max_chars}")
        unknown = set(self.tokenizer.unknown(text))
        body = "".join(ch for ch in text if ch not in unknown) if unknown else text
        body = body[:max_chars]
        if not body:
            raise CharlstmError("nothing to visualize: the text has no characters the model knows")
        return body, torch.from_numpy(self.tokenizer.encode(body).astype("int64"))


@dataclass(frozen=True)
class Trace:
    text: str  # the characters traced
    layer: int
    activations: dict[str, np.ndarray]  # kind -> (T, H): hidden, cell, forget, ...


def _need_two(ids: np.ndarray) -> None:
    if len(ids) < 2:
        raise CharlstmError("the text is too short to evaluate: it needs at least 2 known tokens")
