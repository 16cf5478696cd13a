"""Data-parallel training on the CPU (gloo): two processes must train exactly like one process
with the same total batch, and their checkpoints must work with the ordinary commands."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from charlstm.formats.checkpoint import load_checkpoint
from charlstm.training.distributed import World, init_world, shutdown
from charlstm.training.loop import fit
from tests.conftest import PLAY
from tests.helpers import tiny_run

RUN = {"steps": 3, "eval_every": 1, "batch_size": 8, "seed": 5, "clip": 1e9}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, size: int, port: int, out: Path, attention: int = 0) -> None:
    """One rank of a 2-process fit(); saves its gradients, loss curve and weights."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
        LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(size),
    )  # fmt: skip
    torch.set_num_threads(1)
    world = init_world(torch.device("cpu"))
    try:
        run = tiny_run(PLAY, out / "run", attention=attention, **RUN)
        run.world = world
        fit(run)
        torch.save(
            {
                "grads": {n: p.grad for n, p in run.model.named_parameters()},
                "weights": run.model.state_dict(),
                "metrics": run.metrics,
            },
            out / f"rank{rank}.pt",
        )
    finally:
        shutdown(world, clean=True)


@pytest.mark.parametrize("attention", [0, 5])
def test_two_processes_equal_one_with_the_same_total_batch(tmp_path, attention):
    """With --attention too: each rank carries its streams' memory (#30)."""
    single = tiny_run(PLAY, tmp_path / "single", attention=attention, **RUN)
    fit(single)
    grads = {n: p.grad for n, p in single.model.named_parameters()}

    mp.spawn(_rank_main, args=(2, _free_port(), tmp_path, attention), nprocs=2, join=True)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        # The last step's gradients: DDP's average over the ranks' halves of the batch equals
        # the gradient of the whole batch (the mean loss over equal halves).
        for name, g in grads.items():
            assert torch.allclose(got["grads"][name], g, atol=1e-6, rtol=1e-4), name
        for name, w in single.model.state_dict().items():
            assert torch.allclose(got["weights"][name], w, atol=1e-5), name
        for mine, theirs in zip(got["metrics"], single.metrics, strict=True):
            assert mine["step"] == theirs["step"]
            assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-5)
            assert mine["val_loss"] == pytest.approx(theirs["val_loss"], abs=1e-6)
    # Rank 0 wrote the files, with every stream's carried state for resuming.
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    parts = ckpt["resume"]["rnn_state"]
    assert len(parts) == 2 + bool(attention) and parts[-1].shape[1] == RUN["batch_size"]
    alone = load_checkpoint(tmp_path / "single" / "last.pt")["resume"]["rnn_state"]
    for part, single_part in zip(parts, alone, strict=True):
        assert torch.allclose(part, single_part, atol=1e-5)


def _dropout_rank(rank: int, size: int, port: int, out: Path) -> None:
    """One rank of a 2-process fit() with dropout; saves its weights and the seed it drew its
    last masks from."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
        LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(size),
    )  # fmt: skip
    torch.set_num_threads(1)
    world = init_world(torch.device("cpu"))
    try:
        run = tiny_run(PLAY, out / "run", dropout=0.3, **RUN)
        run.world = world
        fit(run)
        torch.save({"weights": run.model.state_dict(), "seed": torch.initial_seed()},
                   out / f"rank{rank}.pt")  # fmt: skip
    finally:
        shutdown(world, clean=True)


def test_ranks_draw_their_own_dropout_masks_and_the_run_repeats(tmp_path):
    results = []
    for attempt in ("a", "b"):
        out = tmp_path / attempt
        mp.spawn(_dropout_rank, args=(2, _free_port(), out), nprocs=2, join=True)
        results.append([torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)])
    first, second = results
    assert first[0]["seed"] != first[1]["seed"]  # each rank its own masks
    assert [r["seed"] for r in first] == [r["seed"] for r in second]
    for rank in (0, 1):  # the same run twice: the same weights (DDP keeps ranks in step)
        for name, w in first[rank]["weights"].items():
            assert torch.equal(w, second[rank]["weights"][name]), name
            assert torch.equal(w, first[0]["weights"][name]), name


def test_world_rows_split_streams_evenly():
    shares = [World(rank=r, size=3).rows(10) for r in range(3)]
    assert [(s.start, s.stop) for s in shares] == [(0, 3), (3, 6), (6, 10)]
    assert World().rows(7) == slice(0, 7)


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name(
    "torchrun").exists(), reason="torchrun not installed")  # fmt: skip
def test_torchrun_trains_resumes_and_samples(tmp_path, play_file):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(*args: str) -> subprocess.CompletedProcess:
        cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "charlstm",
               "train", *args, "--json"]  # fmt: skip
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=180)  # fmt: skip

    first = launch(str(play_file), "--steps", "40", "--name", "ddp", "--hidden", "32", "-b", "8",
                   "-t", "16", "--eval-every", "20", "--lr", "2e-2")  # fmt: skip
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)  # only rank 0 prints: one JSON object
    metrics = [json.loads(line) for line in (tmp_path / "checkpoints/ddp/metrics.jsonl").open()]
    assert metrics[-1]["val_loss"] < metrics[0]["val_loss"] < 3.5  # it learns
    assert summary["steps"] == 40 and first.stderr.count("training summary") == 1

    again = launch("--resume", "checkpoints/ddp", "--steps", "20")  # 20 more
    assert again.returncode == 0, again.stderr
    assert "resumed at step 40" in again.stderr
    assert json.loads(again.stdout)["steps"] == 60

    sample = subprocess.run(
        [sys.executable, "-m", "charlstm", "sample", "-m", "checkpoints/ddp", "--length", "40",
         "--seed", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert sample.returncode == 0, sample.stderr
    assert len(sample.stdout) >= 40


def _skewed_rank(rank: int, size: int, port: int, out: Path, corpus: Path) -> None:
    """One rank of a 2-process budget run through runs.train, rank 1 with a clock that runs
    three times fast and a step that is slower: every time it measures is wrong for rank 0."""
    import time

    from charlstm.options import TrainOptions
    from charlstm.training import loop as training
    from charlstm.training import runs

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
        LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(size),
    )  # fmt: skip
    if rank == 1:
        real, batch = time.perf_counter, training.window_batch
        time.perf_counter = lambda: 3.0 * real()  # type: ignore[assignment]

        def slow_batch(*args, **kw):
            time.sleep(0.003)
            return batch(*args, **kw)

        training.window_batch = slow_batch
    opts = TrainOptions(corpus=[str(corpus)], budget=6.0, hidden=16, layers=1, lr=1e-2,
                        dropout=0.0, batch_size=8, window=16, threads=1, precision="fp32",
                        checkpoints=out, name="skew", val_fraction=0.3)  # fmt: skip
    summary = runs.train(opts)
    (out / f"rank{rank}.json").write_text(json.dumps(summary))


def test_a_budget_run_ends_together_on_ranks_with_different_clocks_and_speeds(tmp_path):
    """Each rank measuring its own setup time gave each its own budget: one left the loop
    while the other took a step, and both waited in all_reduce for ever (#27)."""
    import time

    corpus = tmp_path / "play.txt"
    corpus.write_text(PLAY * 4)
    ctx = mp.spawn(_skewed_rank, args=(2, _free_port(), tmp_path, corpus), nprocs=2, join=False)
    deadline = time.monotonic() + 150
    try:
        while not ctx.join(timeout=1):
            assert time.monotonic() < deadline, "the ranks hang"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    summaries = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert summaries[0]["steps"] == summaries[1]["steps"] > 0
    assert summaries[0]["val_losses"] == summaries[1]["val_losses"]
    assert summaries[0]["stop_reason"] == "limit reached"
