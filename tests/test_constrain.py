"""Constrained sampling (#29.1): every text sampled under a pattern matches it (a property test
over many generated patterns and seeds, for char, word and BPE models), or is the start of a
match when cut at its length; JSON-schema outputs parse and validate; both engines give the
same text; the end rule; the automaton built once per pattern; bad patterns and schemas as one
line and exit 2 through the CLI; the server's guided_regex, guided_json and response_format."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import httpx
import jsonschema
import numpy as np
import pytest
from outlines_core import Index, Vocabulary
from typer.testing import CliRunner

import charlstm
from charlstm.cli import app
from charlstm.config import SampleConfig
from charlstm.data.tokenizer import CharTokenizer
from charlstm.errors import OptionError
from charlstm.generate import constrain
from charlstm.generate.choose import choose
from charlstm.generate.constrain import automaton
from charlstm.serve.server import load_models

from .conftest import PLAY
from .test_serve import serving

RECORDS = ('{"name": "Romeo", "age": 16, "lover": true}\n'
           '{"name": "Juliet", "age": 13, "lover": true}\n') * 12  # fmt: skip
TINY = {"hidden": 32, "layers": 1, "batch_size": 4, "window": 16, "lr": 1e-2, "steps": 40,
        "threads": 1, "precision": "fp32"}  # fmt: skip
SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"},
    "lover": {"type": "boolean"}}, "required": ["name", "age", "lover"]}  # fmt: skip
KINDS = {"char": {}, "word": {"tokenizer": "word", "vocab_size": 200},
         "bpe": {"tokenizer": "bpe", "vocab_size": 300}}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("constrain")
    (root / "play.txt").write_text(PLAY + RECORDS, encoding="utf-8")
    for kind, how in KINDS.items():
        charlstm.train([str(root / "play.txt")], name=kind, checkpoints=root / "ck", **TINY,
                       **how)  # fmt: skip
    return root / "ck"


def _patterns(rng: random.Random, atoms: list[str], count: int) -> list[str]:
    """Small regular expressions (syntax Python's re and outlines-core read alike) over atoms:
    concatenations, alternatives, groups and quantifiers."""

    def expr(depth: int, top: bool = False) -> str:
        roll = rng.uniform(0.3 if top else 0.0, 1.0)
        if depth == 0 or roll < 0.3:
            return rng.choice(atoms)
        if roll < 0.55:
            return "".join(expr(depth - 1) for _ in range(rng.randint(2, 3)))
        if roll < 0.75:
            return "(" + "|".join(expr(depth - 1) for _ in range(rng.randint(2, 3))) + ")"
        quantifier = rng.choice(["?", "*", "+", "{1,3}", "{2}", "{0,2}"])
        return "(" + expr(depth - 1) + ")" + quantifier

    return [expr(3, top=True) for _ in range(count)]


ATOMS = {
    "char": ["a", "e", "o", "R", "[a-z]", "[A-Z]", "[aeiou]", " ", "[,.?]", "[^\\n]"],
    "bpe": ["a", "e", "o", "R", "[a-z]", "[A-Z]", "[aeiou]", " ", "[,.?]", "Romeo", "what"],
    "word": [" a", " Romeo,", " what", " light", "( [a-z]+)", "( [A-Z][a-z]+)", "\\n",
             "( [a-z]+[,?])", "[A-Z][A-Z]+:"],
}


def _prefix_of_a_match(pattern: str, text: str) -> bool:
    """Whether some match of `pattern` starts with `text`: walked byte by byte through an
    automaton over single bytes (not the model's vocabulary)."""
    index = Index(pattern, Vocabulary(256, {bytes([b]): [b] for b in range(256)}))
    state = index.get_initial_state()
    for b in text.encode():
        state = index.get_next_state(state, b)
        if state is None:
            return False
    return True


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_text_sampled_under_a_pattern_matches_it(runs: Path, kind: str) -> None:
    numpy_model = charlstm.load(runs / kind, engine="numpy")
    torch_model = charlstm.load(runs / kind, engine="torch")
    rng = random.Random(29)
    tried = ended = cut = 0
    for pattern in _patterns(rng, ATOMS[kind], 40):
        seed = rng.randrange(1000)
        options = {"length": rng.choice([2, 5, 30]), "temp": rng.choice([0.5, 1, 1.5]),
                   "top_k": rng.choice([0, 5]), "top_p": rng.choice([1.0, 0.9]), "seed": seed}
        try:
            texts = numpy_model.samples(3, "\n", regex=pattern, **options)
        except OptionError as e:  # a word vocabulary cannot spell every pattern
            assert "can spell" in str(e) or "only the empty text" in str(e), (pattern, e)
            continue
        tried += 1
        assert torch_model.samples(3, "\n", regex=pattern, **options) == texts, pattern
        for text, reason in zip(texts, texts.finish_reasons, strict=True):
            if reason == "stop":
                ended += 1
                assert re.fullmatch(pattern, text, re.DOTALL), (pattern, text)
            else:
                cut += 1
                assert reason == "length" and _prefix_of_a_match(pattern, text), (pattern, text)
    assert tried >= 12 and ended > cut > 0


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_json_sampled_under_a_schema_parses_and_validates(runs: Path, kind: str) -> None:
    model = charlstm.load(runs / kind, engine="numpy")
    texts = model.samples(6, "\n", json_schema=SCHEMA, length=300, seed=3)
    finished = [t for t, why in zip(texts, texts.finish_reasons, strict=True) if why == "stop"]
    assert len(finished) >= 4
    for text in finished:
        jsonschema.validate(json.loads(text), SCHEMA)
    # The schema as a file, its JSON text, or a dict: the same samples.
    assert model.samples(6, "\n", json_schema=json.dumps(SCHEMA), length=300, seed=3) == texts


def test_the_end_scores_the_mass_on_tokens_that_cannot_continue() -> None:
    tok = CharTokenizer("abc")
    auto = automaton("a+b?", tok)
    after_a = auto.next(auto.initial, 0)
    logits = np.array([[1.0, 2.0, 0.5]], dtype=np.float32)
    z, allowed = auto.choice_inputs(logits, [after_a], None)
    assert allowed.tolist() == [[True, True, False, True]]  # a, b, the end; never c
    assert z[0, 3] == pytest.approx(0.5)  # only c cannot continue: log e^0.5
    greedy = SampleConfig(length=5, temperature=0)
    assert choose(z, greedy, np.zeros(1), allowed).tolist() == [1]  # b: 2.0 beats the end
    after_ab = auto.next(after_a, 1)
    assert not auto.goes_on(after_ab)  # nothing can follow "ab": the text ends there
    z, allowed = auto.choice_inputs(logits, [auto.initial], None)
    assert allowed.tolist() == [[True, False, False, False]]  # "" does not match a+
    # A model sure of "c" after "aa" ends the text there.
    sure = np.array([[0.0, 0.0, 9.0]], dtype=np.float32)
    z, allowed = auto.choice_inputs(sure, [auto.next(after_a, 0)], None)
    assert choose(z, greedy, np.zeros(1), allowed).tolist() == [auto.end]


def test_a_part_of_a_pattern_the_vocabulary_cannot_spell_is_never_entered() -> None:
    auto = automaton("a(b@|c)", CharTokenizer("abc"))  # "ab@" needs an "@" it lacks
    after_a = auto.next(auto.initial, 0)
    assert auto.at(after_a).mask.tolist() == [[False, False, True, False]]  # only c
    with pytest.raises(OptionError, match='never saw "@"'):
        automaton("ab@", CharTokenizer("abc"))


def test_the_automaton_is_built_once_per_pattern(runs: Path, monkeypatch) -> None:
    built = []

    class Counted(constrain.Automaton):
        def __init__(self, *args, **kwargs) -> None:
            built.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(constrain, "Automaton", Counted)
    model = charlstm.load(runs / "char", engine="numpy")
    for seed in range(5):
        "".join(model.generate("\n", regex="[A-Z][a-z]{2,5} once", length=20, seed=seed))
    model.samples(4, "\n", regex="[A-Z][a-z]{2,5} once", length=20, seed=1)
    assert built == ["[A-Z][a-z]{2,5} once"]


def _cli(run: Path, *args: str):
    return CliRunner().invoke(app, ["sample", "-m", str(run), "--threads", "1", *args])


def test_the_cli_samples_under_a_pattern_and_says_when_it_was_cut(runs: Path) -> None:
    run = runs / "char"
    out = _cli(run, "-q", "--regex", "[A-Z][a-z]{1,6}", "-N", "4", "--json", "--seed", "2",
               "--no-echo-prime", "--engine", "numpy")  # fmt: skip
    assert out.exit_code == 0, out.output
    names = [json.loads(line)["text"] for line in out.stdout.splitlines()]
    assert len(names) == 4 and all(re.fullmatch("[A-Z][a-z]{1,6}", n) for n in names)
    torch = _cli(run, "-q", "--regex", "[A-Z][a-z]{1,6}", "-N", "4", "--json", "--seed", "2",
                 "--no-echo-prime", "--engine", "torch")  # fmt: skip
    assert torch.stdout == out.stdout
    cut = _cli(run, "--regex", "[a-z]{40}", "--length", "5", "--seed", "1", "--engine", "numpy")
    assert cut.exit_code == 0 and re.fullmatch("\n?[a-z]{5}", cut.stdout), cut.output
    assert "cut at --length 5 tokens" in cut.stderr
    scored = _cli(run, "--regex", "[a-z]{40}", "--length", "5", "--seed", "1", "-N", "2",
                  "--json", "--logprobs", "1", "--engine", "numpy")  # fmt: skip
    assert scored.exit_code == 0 and len(scored.stdout.splitlines()) == 2, scored.output
    assert "samples 1, 2 were cut at --length 5 tokens" in scored.stderr


def _refused(run: Path, *args: str) -> str:
    result = _cli(run, "-q", *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charlstm: error: "), result.stderr
    return lines[0]


def test_bad_patterns_and_schemas_are_one_line_and_exit_2(runs: Path, tmp_path: Path) -> None:
    run = runs / "char"
    assert "never saw \"@\"" in _refused(run, "--regex", "@+")  # not in the vocabulary
    assert "can spell" in _refused(run, "--regex", "a[^\\s\\S]")  # nothing matches
    assert "does not compile" in _refused(run, "--regex", "(ab")
    assert "only the empty text" in _refused(run, "--regex", "(a){0}")
    (tmp_path / "broken.json").write_text("{nope")
    assert "is not JSON" in _refused(run, "--json-schema", str(tmp_path / "broken.json"))
    (tmp_path / "list.json").write_text("[1, 2]")
    assert "a JSON object" in _refused(run, "--json-schema", str(tmp_path / "list.json"))
    (tmp_path / "frog.json").write_text('{"type": "frog"}')
    assert "Unsupported type" in _refused(run, "--json-schema", str(tmp_path / "frog.json"))
    assert "cannot read" in _refused(run, "--json-schema", str(tmp_path / "none.json"))
    assert "not both" in _refused(run, "--json-schema", str(tmp_path / "frog.json"),
                                  "--regex", "a")  # fmt: skip


def test_without_outlines_core_the_error_names_the_extra(runs: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "outlines_core", None)
    assert "charlstm[steer]" in _refused(runs / "char", "--regex", "[a-z]+ never built before")


def test_a_session_refuses_a_pattern(runs: Path) -> None:
    with pytest.raises(OptionError, match="drop regex"):
        charlstm.load(runs / "char", engine="numpy").session(regex="a+")


def test_the_server_follows_guided_regex_guided_json_and_response_format(runs: Path) -> None:
    models = load_models([runs / "char"])
    model = models["char"]
    with serving(models) as url:

        def post(**body) -> httpx.Response:
            return httpx.post(f"{url}/v1/completions", json={"max_tokens": 200, **body},
                              timeout=10)  # fmt: skip

        r = post(prompt="\n", guided_regex="[A-Z][a-z]{1,6}", n=3, seed=4)
        assert r.status_code == 200, r.text
        got = [c["text"] for c in r.json()["choices"]]
        assert all(re.fullmatch("[A-Z][a-z]{1,6}", t) for t in got), got
        assert got == model.samples(3, "\n", regex="[A-Z][a-z]{1,6}", length=200, seed=4)
        for steer in ({"guided_json": SCHEMA}, {"guided_json": json.dumps(SCHEMA)},
                      {"response_format": {"type": "json_schema",
                                           "json_schema": {"name": "who", "schema": SCHEMA}}}):
            r = post(prompt="\n", seed=3, n=6, **steer)
            assert r.status_code == 200, r.text
            want = model.samples(6, "\n", json_schema=SCHEMA, length=200, seed=3)
            assert [c["text"] for c in r.json()["choices"]] == want
        r = post(prompt="\n", seed=1, response_format={"type": "text"}, max_tokens=5)
        assert r.status_code == 200 and len(r.json()["choices"][0]["text"]) == 5
        r = post(guided_regex="(ab")
        assert r.status_code == 400 and "guided_regex" in r.json()["error"]["message"]
        assert r.json()["error"]["param"] == "guided_regex"
        r = post(guided_regex="@+")
        assert r.status_code == 400 and "never saw" in r.json()["error"]["message"]
        r = post(guided_json="{nope")
        assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]
        r = post(response_format={"type": "json_schema"})
        assert r.status_code == 400


def test_log_probabilities_under_a_pattern_are_of_the_distribution_drawn_from(runs: Path) -> None:
    """With a pattern and logprobs, the tokens spell the matching text, and each token's
    log-probability is of the masked distribution (the end a candidate): above the free one."""
    model = charlstm.load(runs / "char", engine="numpy")
    pattern = "[a-z]{2,6}"
    texts = model.samples(4, "\n", regex=pattern, temp=1.0, seed=3, length=20)
    scored = model.samples(4, "\n", regex=pattern, temp=1.0, seed=3, length=20, logprobs=2)
    free = model.token_logprobs("\n" + texts[0])
    for text, tokens in zip(texts, scored, strict=True):
        assert "".join(t.text for t in tokens) == text and re.fullmatch(pattern, text)
        assert all(t.logprob <= 0 and len(t.top) <= 2 for t in tokens)
    # the first letter under the mask is at least as likely as without it
    assert scored[0][0].logprob >= free[1].logprob - 1e-9
