"""Checkpoints written atomically and read with weights_only=True."""
import os
from pathlib import Path
from typing import Any

import torch


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Write to a temporary file beside `path`, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=device, weights_only=True)


def half_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Floating point tensors in fp16 (shipped weights), the rest (BN counters) as they are; on the CPU, so weights
    trained on a GPU load anywhere."""
    return {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in module.state_dict().items()}
