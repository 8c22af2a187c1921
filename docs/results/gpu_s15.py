"""The script of one lent GPU's session (2026-12-04, session 15; run from the repository root with PYTHONPATH set,
the project's missing dependencies carried as wheels; docs/results/gpu_s15.sh): how the shipped denoiser and
captioner are best run on a GPU, through the code a worker calls (models.registry), one image at a time and in
micro-batches. Output: docs/results/gpu_precision_s15.txt.

python3 gpu_s15.py [IMAGES]
"""
import sys
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
from skimage.metrics import peak_signal_noise_ratio
from skimage.transform import resize

from models.registry import Denoiser, load_captioner, load_denoiser

WEIGHTS = Path("models/weights")
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a smoke test of this script
FORMATS = {"NCHW": torch.contiguous_format, "channels-last": torch.channels_last}


def photos() -> list[np.ndarray]:
    """Four 512x512 colour photos in [0, 1] and the same with Gaussian noise, sigma 25 (seeded)."""
    clean = [resize(f(), (512, 512), anti_aliasing=True).astype(np.float32)
             for f in (skimage.data.astronaut, skimage.data.coffee, skimage.data.chelsea, skimage.data.rocket)]
    rng = np.random.default_rng(0)
    return clean + [c + rng.normal(0, 25 / 255, c.shape).astype(np.float32) for c in clean]


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def rate(den: Denoiser, images: list[np.ndarray], batch: int) -> float:
    """Images/s through Denoiser.many (host to GPU and back, as a worker calls it), after one warm-up pass."""
    for start in (True, False):
        sync()
        t = time.perf_counter()
        for i in range(0, len(images), batch):
            den.many(images[i:i + batch], [None] * len(images[i:i + batch]), 512, 32)
        sync()
    return len(images) / (time.perf_counter() - t)


def denoiser(n: int) -> None:
    pics = photos()
    clean, noisy = pics[:4], pics[4:]
    images = [noisy[i % 4] for i in range(n)]
    den = load_denoiser("ffdnet", WEIGHTS, DEV, 512, "auto")
    reduced = den.dtype
    reference = None
    for tuned in (False, True):
        torch.backends.cudnn.benchmark = tuned
        for fmt_name, fmt in FORMATS.items():
            den.color.to(memory_format=fmt)
            for dtype in (reduced, None):
                den.dtype = dtype
                out, _ = den.many(noisy, [None] * 4, 512, 32)
                psnr = float(np.mean([peak_signal_noise_ratio(c, o, data_range=1) for c, o in zip(clean, out)]))
                reference = psnr if reference is None else reference
                for batch in (1, 16):
                    den.max_batch = batch
                    print(f"cudnn.benchmark {tuned}, {fmt_name}, {dtype or 'float32'}, {batch} a pass: "
                          f"{rate(den, images, batch):7.1f} images/s; sigma 25 blind PSNR {psnr:.4f} "
                          f"({psnr - reference:+.4f})", flush=True)


def captioner(n: int) -> None:
    torch.backends.cudnn.benchmark = False
    pics = photos()
    for precision in ("auto", "float32"):
        model = load_captioner("attention", WEIGHTS, DEV, precision=precision)
        pairs = [[pics[i % 4], pics[4 + i % 4]] for i in range(n)]
        for start in (True, False):
            sync()
            t = time.perf_counter()
            said = [model(p) for p in pairs]
            sync()
        print(f"captioner {model.version}: {n / (time.perf_counter() - t):.1f} images/s (denoised and noisy "
              f"captioned together, as a worker does); first: {said[0]}", flush=True)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    print(torch.__version__, torch.cuda.get_device_name() if DEV == "cuda" else "cpu", flush=True)
    denoiser(count)
    captioner(count // 2)
