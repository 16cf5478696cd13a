"""Chat for a model that only continues text: /v1/chat/completions' messages rendered into the
model's own transcript format, by a template per model (`charlstm serve --chat-template`), and
where the reply ends.

    play (the default: tinyshakespeare's layout)    lines (one line per turn)
        <system text>                                   <system text>
                                                        USER: Good morrow.
        USER:                                           ASSISTANT:
        Good morrow.

        ASSISTANT:

A message's speaker is its `name`, else its role's name in the template (USER and ASSISTANT
unless given: `--chat-template play:ROMEO,JULIET`); a system (developer) message is a paragraph
of its own, with no speaker. The prompt ends with the assistant's name, a colon and the space
between a name and its text, so the model writes the assistant's turn; the reply ends where the
turn does (play: at a blank line; lines: at the end of the line) or where a line names the next
speaker, as stop texts.

    template = Template.parse("play:ROMEO,JULIET")          # or templates(specs, models)
    prompt, stops = template.render(request.messages)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from charlstm.errors import UsageError

STYLES = {"play": ("{name}:\n{text}\n\n", ":\n", "\n\n"), "lines": ("{name}: {text}\n", ": ", "\n")}
SPEC = re.compile(r"(?:(?P<model>[^=]+)=)?(?P<style>[a-z]+)(?::(?P<user>[^,]+),(?P<bot>[^,]+))?")


@dataclass(frozen=True)
class Template:
    style: str = "play"
    user: str = "USER"
    assistant: str = "ASSISTANT"

    @classmethod
    def parse(cls, spec: str) -> Template:
        """STYLE or STYLE:USER,ASSISTANT (the MODEL= before it taken off)."""
        found = SPEC.fullmatch(spec.strip())
        if found is None or found["model"] or found["style"] not in STYLES:
            raise UsageError(f"--chat-template takes [MODEL=]{'|'.join(STYLES)}[:USER,ASSISTANT]"
                             f", e.g. play:ROMEO,JULIET; got {spec!r}")  # fmt: skip
        names = (found["user"].strip(), found["bot"].strip()) if found["user"] else ()
        if names and not all(names):
            raise UsageError(f"--chat-template needs names that are not blank; got {spec!r}")
        return cls(found["style"], *names)

    def render(self, messages: Sequence[Any]) -> tuple[str, tuple[str, ...]]:
        """The prompt for messages (each with .role, .content, .name), and the stop texts that
        end the assistant's turn."""
        turn, colon, end = STYLES[self.style]
        parts, speakers = [], {self.user, self.assistant}
        for m in messages:
            text = _text(m.content)
            if m.role in ("system", "developer"):
                parts.append(text.rstrip("\n") + ("\n\n" if self.style == "play" else "\n"))
                continue
            name = m.name or (self.assistant if m.role == "assistant" else self.user)
            speakers.add(name)
            parts.append(turn.format(name=name, text=text.strip("\n")))
        parts.append(self.assistant + colon)
        stops = (end,) + tuple(f"\n{name}:" for name in sorted(speakers) if end != "\n")
        return "".join(parts), stops


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list, joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content)


def templates(specs: Sequence[str], models: Sequence[str]) -> dict[str, Template]:
    """Each model's template from `--chat-template` specs: one without MODEL= is every other
    model's; the default is Template()."""
    default, own = Template(), {}
    for spec in specs:
        model, sep, rest = spec.partition("=") if "=" in spec.split(":")[0] else ("", "", spec)
        template = Template.parse(rest)
        if not sep:
            default = template
        elif model.strip() not in models:
            raise UsageError(f"--chat-template names {model.strip()!r}, which is not served; "
                             f"the models: {', '.join(models)}")  # fmt: skip
        else:
            own[model.strip()] = template
    return {name: own.get(name, default) for name in models}
