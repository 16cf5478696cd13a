"""`charlstm serve` for the clients people use, on a real uvicorn: logprobs and echo agree with
`evaluate --per-token` to 1e-4; a list of prompts numbers its choices as OpenAI does; streamed
logprobs add up to the whole answer's; /v1/chat/completions writes the messages as the model's
own transcript and answers what /v1/completions answers for that transcript; the official
`openai` client speaks to both, streamed and not; bad inputs are a 400 naming the field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from typer.testing import CliRunner

import charlstm
from charlstm.cli import app as cli
from charlstm.config import ServeConfig
from charlstm.errors import OptionError, UsageError
from charlstm.serve.chat import Template, templates
from charlstm.serve.requests import ChatMessage
from charlstm.serve.server import create_app, load_models

from .conftest import PLAY
from .test_serve import TINY, T, complete, serving, stream


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoints folder with a tiny trained run "tiny"."""
    root = tmp_path_factory.mktemp("serve-openai")
    corpus = root / "play.txt"
    corpus.write_text(PLAY, encoding="utf-8")
    charlstm.train([str(corpus)], steps=40, name="tiny", checkpoints=root / "ck", **TINY)
    return root / "ck"


@pytest.fixture(scope="module")
def models(runs: Path) -> dict:
    return load_models([runs / "tiny"])


@pytest.fixture(scope="module")
def url(models: dict) -> Iterator[str]:
    with serving(models) as base:
        yield base


def per_token(run: Path, text: str, tmp: Path) -> list[dict]:
    """`charlstm evaluate --per-token` of `text`."""
    file = tmp / "text.txt"
    file.write_text(text, encoding="utf-8")
    r = CliRunner().invoke(cli, ["evaluate", str(file), "-m", str(run), "--per-token", "-q"])
    assert r.exit_code == 0, r.output
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_logprobs_agree_with_evaluate_per_token(url: str, runs: Path, tmp_path: Path) -> None:
    prompt = PLAY[:150]
    # echo with max_tokens 0: the prompt's tokens' log-probabilities, the first null
    echoed = complete(url, prompt=prompt, max_tokens=0, echo=True, logprobs=0)["choices"][0]
    assert echoed["text"] == prompt and echoed["finish_reason"] == "length"
    expected = per_token(runs / "tiny", prompt, tmp_path)
    lp = echoed["logprobs"]
    assert lp["tokens"] == [row["token"] for row in expected]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["token_logprobs"][1:] == pytest.approx([r["logprob"] for r in expected[1:]],
                                                     abs=1e-4)  # fmt: skip
    # the generated tokens' (the batched step) are evaluate's on the prompt + the completion
    got = complete(url, prompt=prompt, max_tokens=20, temperature=1.0, seed=3, logprobs=2)
    choice = got["choices"][0]
    expected = per_token(runs / "tiny", prompt + choice["text"], tmp_path)[len(prompt) :]
    assert choice["logprobs"]["tokens"] == [row["token"] for row in expected]
    assert choice["logprobs"]["token_logprobs"] == pytest.approx(
        [row["logprob"] for row in expected], abs=1e-4)  # fmt: skip
    assert choice["logprobs"]["text_offset"] == list(range(20))
    # echo with a completion: the prompt's tokens, then the completion's, offsets running on
    both = complete(url, prompt=prompt, max_tokens=20, temperature=1.0, seed=3, logprobs=2,
                    echo=True)["choices"][0]  # fmt: skip
    assert both["text"] == prompt + choice["text"]
    assert both["logprobs"]["text_offset"] == list(range(len(prompt) + 20))
    assert both["logprobs"]["token_logprobs"][len(prompt) :] == pytest.approx(
        choice["logprobs"]["token_logprobs"], abs=1e-9)  # fmt: skip


def test_a_list_of_prompts_numbers_its_choices_as_openai(url: str) -> None:
    prompts = ["ROMEO:\n", "JULIET:\nO"]
    got = complete(url, prompt=prompts, max_tokens=30, n=2, seed=5, echo=True)
    assert [c["index"] for c in got["choices"]] == [0, 1, 2, 3]
    for p, prompt in enumerate(prompts):
        alone = complete(url, prompt=prompt, max_tokens=30, n=2, seed=5)
        for i in range(2):
            assert got["choices"][p * 2 + i]["text"] == prompt + alone["choices"][i]["text"]
    assert got["usage"]["prompt_tokens"] == 7 + 9 and got["usage"]["completion_tokens"] == 120
    # streamed: the same texts and logprobs, chunk by chunk
    whole = complete(url, prompt=prompts, max_tokens=30, n=2, seed=5, logprobs=1, echo=True)
    events, last = stream(url, prompt=prompts, max_tokens=30, n=2, seed=5, logprobs=1, echo=True)
    assert last == "data: [DONE]"
    joined: dict[int, dict[str, list]] = {}
    for e in events:
        for c in e["choices"]:
            into = joined.setdefault(c["index"], {"text": [""], "tokens": [], "offsets": []})
            into["text"][0] += c["text"]
            into["tokens"] += c["logprobs"]["tokens"]
            into["offsets"] += c["logprobs"]["text_offset"]
    for c in whole["choices"]:
        assert joined[c["index"]]["text"][0] == c["text"]
        assert joined[c["index"]]["tokens"] == c["logprobs"]["tokens"]
        assert joined[c["index"]]["offsets"] == c["logprobs"]["text_offset"]


def test_chat_writes_the_transcript_and_ends_with_the_turn() -> None:
    messages = [ChatMessage(role="system", content="A street in Verona."),
                ChatMessage(role="user", content="Good morrow."),
                ChatMessage(role="assistant", content="And to you."),
                ChatMessage(role="user", name="BENVOLIO", content=[{"type": "text",
                                                                   "text": "Speak!"}])]  # fmt: skip
    prompt, stops = Template("play", "ROMEO", "JULIET").render(messages)
    assert prompt == ("A street in Verona.\n\nROMEO:\nGood morrow.\n\nJULIET:\nAnd to you.\n\n"
                      "BENVOLIO:\nSpeak!\n\nJULIET:\n")  # fmt: skip
    assert stops == ("\n\n", "\nBENVOLIO:", "\nJULIET:", "\nROMEO:")
    prompt, stops = Template.parse("lines").render(messages[1:3])
    assert prompt == "USER: Good morrow.\nASSISTANT: And to you.\nASSISTANT: " and stops == ("\n",)
    assert templates(["tiny=lines:A,B", "play:X,Y"], ["tiny", "other"]) == {
        "tiny": Template("lines", "A", "B"), "other": Template("play", "X", "Y")}  # fmt: skip
    with pytest.raises(UsageError, match="not served"):
        templates(["nope=play"], ["tiny"])
    with pytest.raises(OptionError, match="chat_template takes"):
        ServeConfig(chat_template=("screenplay",))


def test_chat_answers_what_the_transcript_completes(url: str, models: dict) -> None:
    messages = [{"role": "user", "content": "But soft, what light?"}]
    options = {"max_tokens": 200, "seed": 7, "temperature": 1.0}
    r = httpx.post(f"{url}/v1/chat/completions", timeout=T,
                   json={"model": "tiny", "messages": messages, "n": 2, **options})  # fmt: skip
    assert r.status_code == 200, r.text
    chat = r.json()
    assert chat["object"] == "chat.completion" and chat["id"].startswith("chatcmpl-")
    prompt, stops = Template().render([ChatMessage(**m) for m in messages])
    assert prompt == "USER:\nBut soft, what light?\n\nASSISTANT:\n"
    same = complete(url, prompt=prompt, stop=list(stops), n=2, on_unknown="skip", **options)
    for c, d in zip(chat["choices"], same["choices"], strict=True):
        assert c["message"] == {"role": "assistant", "content": d["text"]}
        assert c["finish_reason"] == d["finish_reason"]
        assert "\n\n" not in c["message"]["content"]


def test_the_openai_client_speaks_completions_and_chat(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=T, max_retries=0)
    got = client.completions.create(model="tiny", prompt=["ROMEO:", "JULIET:"], max_tokens=10,
                                    logprobs=2, echo=True, seed=1)  # fmt: skip
    assert [c.index for c in got.choices] == [0, 1]
    for choice, prompt in zip(got.choices, ["ROMEO:", "JULIET:"], strict=True):
        assert choice.text.startswith(prompt) and len(choice.logprobs.tokens) == len(prompt) + 10
        assert choice.logprobs.token_logprobs[0] is None
        assert all(len(top) <= 2 for top in choice.logprobs.top_logprobs[1:])
    pieces = [c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="ROMEO:", max_tokens=40, seed=2, stream=True)]  # fmt: skip
    assert "".join(pieces) == client.completions.create(
        model="tiny", prompt="ROMEO:", max_tokens=40, seed=2).choices[0].text  # fmt: skip
    messages = [{"role": "user", "content": "What light?"}]
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=60,
                                           seed=3, logprobs=True, top_logprobs=2)  # fmt: skip
    content = reply.choices[0].message.content
    assert reply.choices[0].message.role == "assistant" and content
    assert "".join(t.token for t in reply.choices[0].logprobs.content) == content
    assert all(len(t.top_logprobs) == 2 for t in reply.choices[0].logprobs.content)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=60,
                                                 seed=3, stream=True))  # fmt: skip
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == content
    assert chunks[-1].choices[0].finish_reason == reply.choices[0].finish_reason
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(model="tiny", messages=[{"role": "bot", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        client.completions.create(model="tiny", prompt="R", logprobs=6)


def test_a_template_for_a_model_that_is_not_served_stops_the_server(models: dict) -> None:
    with pytest.raises(UsageError, match="not served"):
        create_app(models, ServeConfig(chat_template=("romeo=play",)))
