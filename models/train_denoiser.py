"""Train the blind denoiser and its noise estimator on random patches with synthetic camera noise or white
Gaussian noise (models/noise.py), resumable; a new run fine-tunes from the shipped weights.

denocap denoiser train --channels 3 --hours 3
"""
import logging
import math
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models import checkpoint, training
from models.ffdnet import FFDNet, FFDNetConfig
from models.noise import degrade, level_map
from models.precision import training_dtype

log = logging.getLogger(__name__)
VAL_SIGMA = 25.0
VAL_IMAGES = 8
COLLAPSE_DB = 3.0  # validation this far under the best: the run blew up (seen once in bfloat16 at lr 9e-4)
ASYMMETRY = 0.3  # CBDNet's asymmetric loss: an under-estimate costs 0.7, an over-estimate 0.3
ESTIMATE_WEIGHT = 1.0
WARMUP = 250  # steps
TRUE_MAP_SHARE = 0.5  # samples denoised with the true noise map (the known-sigma mode) rather than the estimate


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
    """The held-out crops twice: with Gaussian noise of sigma 25, and with synthetic camera noise."""
    clean = torch.stack([
        torch.from_numpy(im[:crop, :crop].copy()).permute(2, 0, 1).float() / 255.0 for im in images
    ])
    gen = torch.Generator().manual_seed(0)
    gaussian = clean + torch.randn(clean.shape, generator=gen) * VAL_SIGMA / 255.0
    camera = degrade(clean, gen)
    return torch.cat([clean, clean]), torch.cat([gaussian, camera])


@torch.inference_mode()
def validate(model: FFDNet, clean: torch.Tensor, noisy: torch.Tensor) -> float:
    """Mean PSNR of blind denoising (the estimator's map) over the validation set."""
    model.eval()
    out = model(noisy, model.estimate(noisy)).clamp(0, 1)
    model.train()
    mse = ((out - clean) ** 2).flatten(1).mean(1)
    return float((10 * torch.log10(1.0 / mse)).mean())


def asymmetric_loss(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    error = estimate - target
    return ((ASYMMETRY - (error < 0).float()).abs() * error**2).mean()


def training_loss(model: FFDNet, clean: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Denoising MSE plus the estimator's asymmetric loss against the true local noise level."""
    noisy = degrade(clean, gen)
    target = level_map(noisy, clean)
    estimate = model.estimate(noisy)
    use_true = torch.rand(len(clean), 1, 1, 1, generator=gen, device=clean.device) < TRUE_MAP_SHARE
    out = model(noisy, torch.where(use_true, target, estimate))
    return F.mse_loss(out.float(), clean) + ESTIMATE_WEIGHT * asymmetric_loss(estimate.float(), target)


def from_single_level(state: dict[str, torch.Tensor], model: FFDNet) -> dict[str, torch.Tensor]:
    """Weights of the earlier net (one noise-level channel, no estimator) for this one: the level's head weights
    are shared out over the per-channel map, so a uniform map gives the earlier output; the estimator is new."""
    ours = model.state_dict()
    merged = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    head = merged["head.weight"]
    if head.shape[1] != ours["head.weight"].shape[1]:
        c = model.config.channels
        merged["head.weight"] = torch.cat([head[:, :-1], head[:, -1:].expand(-1, c, -1, -1) / c], 1)
    return {**ours, **merged}


def learning_rate(step: int, total: int, base: float, warmup: int = WARMUP) -> float:
    """Linear warm-up, then cosine to 1e-5: a fresh Adam's first steps move every weight by about the rate, which
    knocked fine-tuned weights 0.2-0.5 dB below their start without it."""
    return min(1.0, (step + 1) / warmup) * (1e-5 + 0.5 * (base - 1e-5) * (1 + math.cos(math.pi * min(step / total, 1.0))))


def train(
    data: Path, run_dir: Path, export: Path, channels: int = 3, patch: int = 48, batch: int = 32,
    steps: int = 20000, hours: float = 1.0, lr: float = 1e-3, threads: int = 1, seed: int = 0,
    config: FFDNetConfig | None = None, eval_every: int = 250, init: Path | None = None,
) -> float:
    """Run until `steps` or `hours`; returns the best validation PSNR. Resumes from run_dir/last.pt; a new run
    starts from the shipped weights `init` when given (fine-tuning with a fresh optimizer and schedule).
    The forward and backward passes run in bfloat16 on a GPU or a CPU with native bfloat16 (validation and the
    weights stay float32)."""
    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True  # fixed patch size: let cuDNN pick its fastest kernels once
    images = load_images(data, channels)
    val_clean, val_noisy = (t.to(device) for t in validation_set(images[-VAL_IMAGES:]))
    patches = Patches(images[:-VAL_IMAGES], device)
    last = run_dir / "last.pt"
    state = training.saved(last)
    shipped = checkpoint.load(init) if init and not state else None
    source = state or shipped
    config = FFDNetConfig(**source["config"]) if source else (config or FFDNetConfig(channels=channels))
    model = FFDNet(config).to(device)
    if shipped:
        model.load_state_dict(from_single_level(shipped["state"], model))
    run = training.Run(last, "step", model, torch.optim.Adam(model.parameters(), lr=lr),
                       validate(model, val_clean, val_noisy) if shipped else -math.inf, {"lr_scale": 1.0})
    if shipped:
        log.info("starting from %s (its step %d): val %.2f dB", init, shipped["step"], run.best)
    if run.resume(state):
        log.info("resumed at step %d (best %.2f dB)", run.done, run.best)
    log.info("%s on %s: %d parameters", config, device, sum(p.numel() for p in model.parameters()))
    gen = torch.Generator(device).manual_seed(seed + run.done)
    dtype = training_dtype(device)
    for start in run.rounds(steps, hours):
        tick, end = time.monotonic(), min(steps, (start // eval_every + 1) * eval_every)
        for step in range(start, end):
            if run.overdue():  # the steps since the last evaluation are lost, as a kill would lose them
                return run.best
            clean = patches.sample(batch, patch, gen)
            with torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss = training_loss(model, clean, gen)
            run.step(loss, run.extra["lr_scale"] * learning_rate(step, steps, lr))
        psnr = validate(model, val_clean, val_noisy)
        if not psnr >= run.best - COLLAPSE_DB and run.rollback():  # also catches NaN
            run.extra["lr_scale"] /= 2
            log.warning("validation %.2f dB, best %.2f: back to step %d, learning rate x%g", psnr, run.best, run.done,
                        run.extra["lr_scale"])
            continue
        rate = (end - start) * batch / (time.monotonic() - tick)
        run.keep(end, psnr, partial(export_weights, model, export, end, psnr))
        log.info("step %d  patches/s %.1f  loss %.6f  val PSNR (blind; sigma 25, camera) %.2f dB  best %.2f",
                 end, rate, loss.item(), psnr, run.best)
    return run.best


def export_weights(model: FFDNet, path: Path, step: int, val_psnr: float) -> None:
    checkpoint.save_atomic({"arch": "ffdnet", "config": asdict(model.config), "state": checkpoint.half_state(model),
                            "step": step, "val_psnr": val_psnr}, path)
