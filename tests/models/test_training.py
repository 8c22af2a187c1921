"""The shared training loop: a killed run resumes where its last checkpoint left it, the best is exported only when
it improves, a checkpoint is never half written, a collapse goes back to the last checkpoint."""
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import torch

from models import checkpoint
from models.training import Run, saved


@dataclass(frozen=True)
class TinyConfig:
    width: int = 3


class Tiny(torch.nn.Linear):
    def __init__(self, config: TinyConfig) -> None:
        super().__init__(config.width, 1)
        self.config = config


def new_run(path: Path) -> Run:
    torch.manual_seed(0)
    model = Tiny(TinyConfig())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # momentum: the optimizer has state to resume
    return Run(path, "round", model, opt, extra={"scale": 1.0})


def train(run: Run, scores: list[float], total: int, exported: list[int]) -> None:
    """Round i scores scores[i]; a round without a score is killed after its step, before its checkpoint."""
    for done in run.rounds(total, hours=1.0):
        run.step(run.model(torch.ones(1, 3)).square().sum())
        run.keep(done + 1, scores[done], partial(exported.append, done + 1))


def test_the_best_is_exported_only_when_it_improves(tmp_path: Path) -> None:
    run, exported = new_run(tmp_path / "last.pt"), []
    train(run, [1.0, 3.0, 2.0, 3.0, math.nan, 4.0], 6, exported)
    assert exported == [1, 2, 6] and run.best == 4.0
    state = checkpoint.load(tmp_path / "last.pt")
    assert (state["round"], state["best"], state["scale"], state["config"]) == (6, 4.0, 1.0, {"width": 3})


def test_a_killed_run_resumes_at_its_round_with_its_best_weights_and_optimizer(tmp_path: Path) -> None:
    killed = new_run(tmp_path / "killed" / "last.pt")
    killed.extra["scale"] = 0.5
    with pytest.raises(IndexError):
        train(killed, [1.0, 3.0], 4, [])
    resumed = new_run(killed.path)
    assert resumed.resume(saved(killed.path))
    assert (resumed.done, resumed.best, resumed.extra) == (2, 3.0, {"scale": 0.5})
    whole, exported = new_run(tmp_path / "whole" / "last.pt"), []
    train(whole, [1.0, 3.0, 2.0, 5.0], 4, [])
    train(resumed, [1.0, 3.0, 2.0, 5.0], 4, exported)
    assert exported == [4] and resumed.best == whole.best == 5.0
    torch.testing.assert_close(resumed.model.state_dict(), whole.model.state_dict())


def test_a_new_run_does_not_resume(tmp_path: Path) -> None:
    run = new_run(tmp_path / "last.pt")
    assert saved(run.path) is None and not run.resume(None)
    assert (run.done, run.best) == (0, -math.inf) and not run.rollback()


def test_a_checkpoint_is_never_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = new_run(tmp_path / "last.pt")
    train(run, [1.0], 1, [])

    def crash(obj: object, f: Path) -> None:
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("killed while writing")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        train(run, [1.0, 2.0], 2, [])
    assert checkpoint.load(run.path)["round"] == 1


def test_rollback_returns_to_the_last_checkpoint_and_keeps_the_extra_numbers(tmp_path: Path) -> None:
    run = new_run(tmp_path / "last.pt")
    train(run, [1.0], 1, [])
    kept = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.step(run.model(torch.ones(1, 3)).square().sum())
    run.done, run.extra["scale"] = 7, 0.25
    assert run.rollback()
    assert (run.done, run.extra) == (1, {"scale": 0.25})
    torch.testing.assert_close(run.model.state_dict(), kept)


def test_no_round_starts_after_the_deadline(tmp_path: Path) -> None:
    run = new_run(tmp_path / "last.pt")
    assert not run.overdue()
    assert list(run.rounds(5, hours=0.0)) == [] and not run.path.exists() and run.overdue()
