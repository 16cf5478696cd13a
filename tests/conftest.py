"""Shared fixtures: tiny corpora written by the tests themselves, and tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest

# A small play-like text: enough structure for a tiny model to learn something in seconds.
PLAY = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n\n"
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n"
    "ROMEO:\nShall I hear more, or shall I speak at this?\n\n"
    "JULIET:\nWhat's in a name? That which we call a rose\n\n"
) * 12


@pytest.fixture
def play_file(tmp_path: Path) -> Path:
    path = tmp_path / "play.txt"
    path.write_text(PLAY, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and tests must not fight over the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
