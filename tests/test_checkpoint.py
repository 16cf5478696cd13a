import os
import pickle

import pytest
import torch

from charlstm.formats.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from charlstm.model.language_model import LanguageModel, ModelConfig
from charlstm.training.loop import fit

from .conftest import PLAY
from .helpers import tiny_run


def test_round_trip_gives_identical_logits(tmp_path):
    run = tiny_run(PLAY, tmp_path / "r", steps=10)
    fit(run)
    ckpt = load_checkpoint(tmp_path / "r" / "best.pt")
    model = LanguageModel(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    run.model.eval()
    ids = torch.randint(0, run.model_cfg.vocab_size, (2, 30))
    assert torch.equal(model(ids)[0], run.model(ids)[0])
    assert ckpt["tokenizer"] == run.tokenizer and ckpt["charlstm_version"]


def test_truncated_or_foreign_files_are_refused(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint({"model": {"w": torch.ones(1000)}}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        load_checkpoint(cut)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a charlstm checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_newer_format_is_refused(tmp_path):
    path = tmp_path / "new.pt"
    save_checkpoint({"format_version": 99}, path)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(path)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    path = tmp_path / "evil.pt"
    torch.save({"format": "charlstm", "format_version": 1, "model": payload}, path)
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(path)
    assert not marker.exists()
    # And a plain pickle file is no checkpoint either.
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_atomic_write_keeps_the_old_file_when_saving_fails(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)

    # A lambda cannot be pickled: torch.save fails midway through the write.
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        save_checkpoint({"step": 2, "bad": lambda: 0}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_the_carried_state_must_have_the_cells_parts(tmp_path):
    """An sLSTM carries (h, c, n, m): a last.pt whose state lacks parts is refused on resume,
    and the parameter count computed from the config matches the built model."""
    from charlstm.formats.checkpoint import parameter_count, read_checkpoint

    for cell in ("slstm", "mogrifier"):
        run = tiny_run(PLAY, tmp_path / cell, hidden=8, steps=3, cell=cell)
        fit(run)
        # parameter_count counts torch's two biases a gate, our cells keep one: within G·H·L.
        built = run.model.num_parameters()
        assert 0 <= parameter_count(run.model_cfg) - built <= 4 * 8 * 2
        last = tmp_path / cell / "last.pt"
        assert read_checkpoint(last, resume=True).config.cell == cell
    ckpt = load_checkpoint(tmp_path / "slstm" / "last.pt")
    assert len(ckpt["resume"]["rnn_state"]) == 4
    ckpt["resume"]["rnn_state"] = ckpt["resume"]["rnn_state"][:2]
    save_checkpoint(ckpt, tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="a slstm carries 4"):
        read_checkpoint(tmp_path / "cut.pt", resume=True)


def test_optimizer_flags_that_change_the_state_or_the_step_are_refused(tmp_path):
    """amsgrad on would need state the file lacks (a KeyError mid-step); maximize would climb."""
    from charlstm.formats.checkpoint import read_checkpoint

    run = tiny_run(PLAY, tmp_path / "r", hidden=8, steps=3)
    fit(run)
    for flag in ("amsgrad", "maximize"):
        ckpt = load_checkpoint(tmp_path / "r" / "last.pt")
        ckpt["resume"]["optimizer"]["param_groups"][0][flag] = True
        save_checkpoint(ckpt, tmp_path / f"{flag}.pt")
        with pytest.raises(CheckpointError, match=flag):
            read_checkpoint(tmp_path / f"{flag}.pt", resume=True)
