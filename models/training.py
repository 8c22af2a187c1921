"""The loop the trainers share: resume a run from its last checkpoint, train in rounds until a count or a deadline,
export the weights when a round's score beats the best, checkpoint atomically after every round."""
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from models import checkpoint


def saved(path: Path) -> dict[str, Any] | None:
    """A run's last checkpoint, None for a new run; read before the network is built, as it holds the config."""
    return checkpoint.load(path) if path.exists() else None


@dataclass
class Run:
    """What a checkpoint holds: the model (with its `config` dataclass), the optimizer, the rounds done (stored under
    `unit`: step, epoch or round), the best score, and `extra` numbers such as a learning-rate scale."""
    path: Path
    unit: str
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    best: float = -math.inf
    extra: dict[str, float] = field(default_factory=dict)
    done: int = 0
    deadline: float = math.inf

    def resume(self, state: dict[str, Any] | None) -> bool:
        """Continue from `state` (see saved()) when there is one."""
        if state is not None:
            self.extra = {k: state.get(k, v) for k, v in self.extra.items()}
        return self.restore(state)

    def rollback(self) -> bool:
        """Back to the last checkpoint, the extra numbers kept as they are now; False when there is none yet."""
        return self.restore(saved(self.path))

    def restore(self, state: dict[str, Any] | None) -> bool:
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.done, self.best = state[self.unit], state["best"]
        return state is not None

    def rounds(self, total: int, hours: float) -> Iterator[int]:
        """The rounds done before each new one, until `total` are done or `hours` from now have passed."""
        self.deadline = time.monotonic() + hours * 3600
        while self.done < total and not self.overdue():
            yield self.done

    def overdue(self) -> bool:
        return time.monotonic() >= self.deadline

    def step(self, loss: torch.Tensor, lr: float | None = None, clip: float | None = None) -> None:
        """One optimizer step on `loss`, at `lr` when given, the gradient norm clipped to `clip` when given."""
        if lr is not None:
            for group in self.opt.param_groups:
                group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.opt.step()

    def keep(self, done: int, score: float, export: Callable[[], None]) -> None:
        """`done` rounds scored `score`: export when it beats the best (NaN never does), then checkpoint."""
        self.done = done
        if score > self.best:
            self.best = score
            export()
        checkpoint.save_atomic({"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                                "config": asdict(self.model.config), self.unit: done, "best": self.best,
                                **self.extra}, self.path)
