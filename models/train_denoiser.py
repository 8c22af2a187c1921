"""Train the blind denoiser on random patches with Gaussian noise of a random level (resumable).

python -m models.train_denoiser --channels 3 --hours 3
"""
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from core.config import get_settings
from models import checkpoint
from models.ffdnet import FFDNet, FFDNetConfig

log = logging.getLogger(__name__)
SIGMA_MAX = 75.0
VAL_SIGMA = 25.0
VAL_IMAGES = 8
COLLAPSE_DB = 3.0  # validation this far under the best: the run blew up (seen once in bfloat16 at lr 9e-4)


def load_images(folder: Path, channels: int) -> list[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".tif"})
    assert files, f"no images in {folder}"
    mode = "RGB" if channels == 3 else "L"
    arrays = [np.asarray(Image.open(p).convert(mode)) for p in files]
    return [a if a.ndim == 3 else a[..., None] for a in arrays]  # (H, W, C) uint8


class Patches:
    """The training images as one uint8 tensor on the training device, so crops, flips and transposes are drawn
    there in a few batched operations (a per-patch Python loop starved a GPU)."""

    def __init__(self, images: list[np.ndarray], device: str) -> None:
        landscape = [a.transpose(1, 0, 2) if a.shape[0] > a.shape[1] else a for a in images]
        h, w = max(a.shape[0] for a in landscape), max(a.shape[1] for a in landscape)
        pixels = np.zeros((len(landscape), h, w, landscape[0].shape[2]), dtype=np.uint8)
        for i, a in enumerate(landscape):
            pixels[i, :a.shape[0], :a.shape[1]] = a
        self.pixels = torch.from_numpy(pixels).to(device)
        self.sizes = torch.tensor([a.shape[:2] for a in landscape], device=device)
        self.smallest = min(min(a.shape[:2]) for a in landscape)

    def sample(self, size: int, patch: int, gen: torch.Generator) -> torch.Tensor:
        """(size, C, patch, patch) float crops in [0, 1], each under one of the 8 flips/rotations."""
        assert patch <= self.smallest, f"patch {patch} is larger than the smallest training image ({self.smallest} px)"
        dev = self.pixels.device
        n = torch.randint(len(self.sizes), (size,), generator=gen, device=dev)
        corner = (torch.rand(size, 2, generator=gen, device=dev) * (self.sizes[n] - patch + 1)).long()
        r = torch.arange(patch, device=dev)
        ys, xs = corner[:, :1] + r, corner[:, 1:] + r
        crops = self.pixels[n[:, None, None], ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2).float() / 255.0
        flips = torch.rand(size, 3, 1, 1, 1, generator=gen, device=dev) < 0.5
        crops = torch.where(flips[:, 0], crops.transpose(-1, -2), crops)
        crops = torch.where(flips[:, 1], crops.flip(-1), crops)
        return torch.where(flips[:, 2], crops.flip(-2), crops)


def validation_set(images: list[np.ndarray], crop: int = 192) -> tuple[torch.Tensor, torch.Tensor]:
    clean = torch.stack([
        torch.from_numpy(im[:crop, :crop].copy()).permute(2, 0, 1).float() / 255.0 for im in images
    ])
    gen = torch.Generator().manual_seed(0)
    noisy = clean + torch.randn(clean.shape, generator=gen) * VAL_SIGMA / 255.0
    return clean, noisy


@torch.inference_mode()
def validate(model: FFDNet, clean: torch.Tensor, noisy: torch.Tensor) -> float:
    model.eval()
    out = model(noisy, torch.full((len(noisy),), VAL_SIGMA / 255.0, device=noisy.device)).clamp(0, 1)
    model.train()
    mse = ((out - clean) ** 2).flatten(1).mean(1)
    return float((10 * torch.log10(1.0 / mse)).mean())


def learning_rate(step: int, total: int, base: float) -> float:
    return 1e-5 + 0.5 * (base - 1e-5) * (1 + math.cos(math.pi * min(step / total, 1.0)))


def train(
    data: Path, run_dir: Path, export: Path, channels: int = 3, patch: int = 48, batch: int = 32,
    steps: int = 20000, hours: float = 1.0, lr: float = 1e-3, threads: int = 1, seed: int = 0,
    config: FFDNetConfig | None = None, eval_every: int = 250, init: Path | None = None,
) -> float:
    """Run until `steps` or `hours`; returns the best validation PSNR. Resumes from run_dir/last.pt; a new run
    starts from the shipped weights `init` when given (fine-tuning with a fresh optimizer and schedule).
    On a GPU the forward and backward passes run in bfloat16 (validation and the weights stay float32)."""
    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True  # fixed patch size: let cuDNN pick its fastest kernels once
    images = load_images(data, channels)
    val_clean, val_noisy = (t.to(device) for t in validation_set(images[-VAL_IMAGES:]))
    patches = Patches(images[:-VAL_IMAGES], device)
    last = run_dir / "last.pt"
    state = checkpoint.load(last) if last.exists() else None
    shipped = checkpoint.load(init) if init and not state else None
    source = state or shipped
    config = FFDNetConfig(**source["config"]) if source else (config or FFDNetConfig(channels=channels))
    model = FFDNet(config).to(device)
    if shipped:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in shipped["state"].items()})
        log.info("starting from %s (step %d, val %.2f dB)", init, shipped["step"], shipped["val_psnr"])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    step, best, scale = 0, shipped["val_psnr"] if shipped else -math.inf, 1.0
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, best, scale = state["step"], state["best"], state.get("lr_scale", 1.0)
        log.info("resumed at step %d (best %.2f dB)", step, best)
    log.info("%s on %s: %d parameters", config, device, sum(p.numel() for p in model.parameters()))
    gen = torch.Generator(device).manual_seed(seed + step)
    deadline = time.monotonic() + hours * 3600
    tick, seen = time.monotonic(), 0
    while step < steps and time.monotonic() < deadline:
        clean = patches.sample(batch, patch, gen)
        sigma = torch.rand(batch, generator=gen, device=device) * SIGMA_MAX / 255.0
        noisy = clean + torch.randn(clean.shape, generator=gen, device=device) * sigma.view(-1, 1, 1, 1)
        for group in opt.param_groups:
            group["lr"] = scale * learning_rate(step, steps, lr)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            out = model(noisy, sigma)
        loss = F.mse_loss(out.float(), clean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step, seen = step + 1, seen + batch
        if step % eval_every == 0 or step == steps:
            psnr = validate(model, val_clean, val_noisy)
            if not psnr >= best - COLLAPSE_DB and last.exists():  # also catches NaN
                good = checkpoint.load(last)
                model.load_state_dict(good["model"])
                opt.load_state_dict(good["optimizer"])
                step, scale = good["step"], scale / 2
                log.warning("validation %.2f dB, best %.2f: back to step %d, learning rate x%g", psnr, best, step, scale)
                continue
            rate = seen / (time.monotonic() - tick)
            tick, seen = time.monotonic(), 0
            if psnr > best:
                best = psnr
                export_weights(model, export, step, psnr)
            checkpoint.save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                    "config": asdict(config), "step": step, "best": best, "lr_scale": scale}, last)
            log.info("step %d  patches/s %.1f  loss %.6f  val PSNR(sigma 25) %.2f dB  best %.2f",
                     step, rate, loss.item(), psnr, best)
    return best


def export_weights(model: FFDNet, path: Path, step: int, val_psnr: float) -> None:
    checkpoint.save_atomic({"arch": "ffdnet", "config": asdict(model.config), "state": checkpoint.half_state(model),
                            "step": step, "val_psnr": val_psnr}, path)


def main() -> None:
    import argparse
    settings = get_settings()
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--channels", type=int, default=3, choices=[1, 3])
    p.add_argument("--data", type=Path)
    p.add_argument("--run-dir", type=Path)
    p.add_argument("--export", type=Path)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--features", type=int, default=FFDNetConfig.features)
    p.add_argument("--blocks", type=int, default=FFDNetConfig.blocks)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--init", type=Path, help="shipped weights to start a new run from")
    a = p.parse_args()
    name = "color" if a.channels == 3 else "gray"
    data = a.data or settings.shared_data / "denoise" / "train" / ("cbsd432" if a.channels == 3 else "bsd400")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(data, a.run_dir or settings.data_dir / "runs" / f"denoiser_{name}",
          a.export or Path(__file__).parent / "weights" / f"ffdnet_{name}.pt",
          channels=a.channels, patch=a.patch, batch=a.batch, steps=a.steps, hours=a.hours, threads=a.threads,
          lr=a.lr, init=a.init, eval_every=a.eval_every,
          config=FFDNetConfig(channels=a.channels, features=a.features, blocks=a.blocks))


if __name__ == "__main__":
    main()
