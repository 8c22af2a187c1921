"""The script of one lent GPU's session (2026-12-04; run from the repository root as .dev/gpu.py, with
PYTHONPATH=. and CBSD432 copied into .dev/, which the device calls carried; docs/results/gpu_s14.sh): the
shipped denoiser's throughput on the GPU, then the colour denoiser fine-tuned from the shipped weights under
several settings side by side (runs A-E), each in two segments so that a snapshot comes back besides the weights
that validation picks. Log: docs/results/denoiser_train_gpu_s14.log.

python3 gpu.py bench
python3 gpu.py train NAME DATA PATCH BATCH LR MINUTES EVAL_EVERY SNAPSHOT(0/1)
"""
import logging
import os
import sys
import time
from pathlib import Path

import torch

from models import checkpoint
from models import train_denoiser as td
from models.ffdnet import FFDNet, FFDNetConfig
from models.tiling import denoise_many

WEIGHTS = Path(os.environ.get("INIT", "models/weights/ffdnet_color.pt"))
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a smoke test of this script
torch.backends.cudnn.benchmark = True  # as train() sets it: fixed patch sizes


def load(path: Path, device: str) -> FFDNet:
    state = checkpoint.load(path)
    net = FFDNet(FFDNetConfig(**state["config"]))
    net.load_state_dict({k: v.float() for k, v in state["state"].items()})
    return net.to(device).eval()


def bench() -> None:
    """Blind 512x512 colour images/s, float16 and float32, micro-batches of 1 and 16 (compute alone)."""
    net = load(WEIGHTS, DEV)
    gen = torch.Generator().manual_seed(0)
    xs = [torch.rand(1, 3, 512, 512, generator=gen).to(DEV) for _ in range(64 if DEV == "cuda" else 2)]
    for dtype in (torch.float16, None):
        for batch in (1, 16):
            with torch.inference_mode():
                denoise_many(net, xs[:batch], [None] * batch, 512, 32, batch, dtype)
                sync()
                t = time.perf_counter()
                for start in range(0, len(xs), batch):
                    chunk = xs[start:start + batch]
                    denoise_many(net, chunk, [None] * len(chunk), 512, 32, batch, dtype)
                sync()
            print(f"denoise 512x512 blind, {dtype or 'float32'}, batch {batch}: "
                  f"{len(xs) / (time.perf_counter() - t):.1f} images/s", flush=True)


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def probe(data: Path, patch: int, batch: int) -> float:
    """Training steps/s on this device, measured on a throwaway copy."""
    images = td.load_images(data, 3)
    patches = td.Patches(images[:-td.VAL_IMAGES], DEV)
    model = load(WEIGHTS, DEV).train()
    opt = torch.optim.Adam(model.parameters(), 1e-5)
    gen = torch.Generator(DEV).manual_seed(1)
    for i in range(30):
        if i == 10:
            sync()
            t = time.perf_counter()
        with torch.autocast(DEV, dtype=torch.bfloat16):
            loss = td.training_loss(model, patches.sample(batch, patch, gen), gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync()
    return 20 / (time.perf_counter() - t)


def snapshot(run: Path, out: Path, name: str) -> None:
    state = checkpoint.load(run / "last.pt")
    model = FFDNet(FFDNetConfig(**state["config"]))
    model.load_state_dict(state["model"])
    td.export_weights(model, out / f"{name}_step{state['step']}.pt", state["step"], state["best"])


log = logging.getLogger("gpu_s14")


def train(name: str, data: str, patch: int, batch: int, lr: float, minutes: float, eval_every: int,
          snap: bool) -> None:
    out, run = Path(os.environ["OUT"]), Path(f"/tmp/run_{name}")
    logging.basicConfig(filename=out / "train.log", level=logging.INFO, format=f"%(asctime)s {name} %(message)s")
    start = time.monotonic()
    rate = probe(Path(data), patch, batch)
    steps = int(os.environ["STEPS"]) if "STEPS" in os.environ else int(rate * (minutes * 60 - (time.monotonic() - start)) * 0.9) // eval_every * eval_every
    log.info("probe: %.2f steps/s of %d %dx%d patches -> %d steps, lr %g", rate, batch, patch, patch, steps, lr)
    for share in (0.6, 1.0):
        left = minutes * 60 * share - (time.monotonic() - start)
        td.train(Path(data), run, out / f"{name}_best.pt", 3, patch, batch, steps, left / 3600, lr,
                 eval_every=eval_every, init=WEIGHTS)
        if snap and (run / "last.pt").exists():
            snapshot(run, out, name)
    log.info("done")


if __name__ == "__main__":
    if sys.argv[1] == "bench":
        bench()
    else:
        n, d, p, b, lr, m, e, s = sys.argv[2:]
        train(n, d, int(p), int(b), float(lr), float(m), int(e), s == "1")
