"""What `charlstm serve` reports on stderr, as plain lines."""

from __future__ import annotations

import sys
from collections.abc import Callable


def serve_report(quiet: bool) -> Callable[[str, dict], None]:
    """What the server reports, as plain lines on stderr: where it listens, one line per
    request (status, method, path, model, tokens, seconds, seconds to the first token,
    client), errors (even --quiet)."""

    def report(event: str, data: dict) -> None:
        line = ""
        if event == "error":
            line = f"charlstm serve: {data['message']}\n{data['traceback']}"
        elif quiet:
            return
        elif event == "listening":
            key = ", API key required" if data["api_key"] else ""
            models = ", ".join(data["models"])
            line = (f"listening on {data['url']} (models: {models}; batch {data['max_batch']}, "
                    f"queue {data['queue']}{key}); Ctrl-C stops")  # fmt: skip
        elif event == "request":
            model = f" {data['model']}" if data["model"] else ""
            tokens = "" if data["tokens"] is None else f" {data['tokens']} tokens"
            first = "" if data["first"] is None else f" (first {data['first']:.3f} s)"
            line = (f"{data['status']} {data['method']} {data['path']}{model}{tokens} "
                    f"{data['seconds']:.3f} s{first} {data['client']}")  # fmt: skip
        elif event == "stopped":
            line = "stopped"
        if line:
            sys.stderr.write(line.rstrip("\n") + "\n")

    return report
