"""Uniform weight average of checkpoints from one fine-tuning trajectory (a "model soup")."""
import sys
from pathlib import Path

from models import checkpoint

out, paths = Path(sys.argv[1]), sys.argv[2:]
states = [checkpoint.load(Path(p)) for p in paths]
avg = {k: (sum(s["state"][k].float() for s in states) / len(states)).half() if states[0]["state"][k].is_floating_point()
       else states[0]["state"][k] for k in states[0]["state"]}
checkpoint.save_atomic({**states[0], "state": avg, "step": -1, "val_psnr": float("nan"), "soup": paths}, out)
print(out, len(states))
