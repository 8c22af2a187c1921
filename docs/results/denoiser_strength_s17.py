"""Is the blind default too timid on real noise? The estimated noise map scaled by 1 / 1.25 / 1.5 / 2 before the
shipped colour network (float32, whole images): mean PSNR on PolyU's real pairs (evaluation only) and on CBSD68 at
sigma 25 (noise seeded 0).

PYTHONPATH=. python docs/results/denoiser_strength_s17.py 100 20   (PolyU pairs, CBSD68 images)
"""
import os
import sys
from pathlib import Path

import numpy as np
import torch

from bench.real_noise import polyu, read
from core.config import get_settings
from models.registry import load_denoiser

SHARED = Path(os.environ.get("DENOCAP_SHARED_DATA", "../shared/data"))
SCALES = (1.0, 1.25, 1.5, 2.0)
torch.set_num_threads(2)
net = load_denoiser("ffdnet", get_settings().weights_dir, "cpu", precision="float32").color


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / np.mean((np.clip(a, 0, 1) - b) ** 2)))


def run(x: np.ndarray, scale: float) -> np.ndarray:
    t = torch.from_numpy(x).permute(2, 0, 1)[None]
    with torch.inference_mode():
        return net(t, net.estimate(t) * scale)[0].permute(1, 2, 0).numpy()


pairs = polyu(SHARED / "denoise" / "real" / "polyu", int(sys.argv[1]))
inputs = np.array([psnr(noisy, clean) for _, noisy, clean in pairs])
real = {s: np.array([psnr(run(noisy, s), clean) for _, noisy, clean in pairs]) for s in SCALES}
print("polyu", len(pairs), "input", inputs.mean(), {s: round(float(v.mean()), 3) for s, v in real.items()},
      "worse than input:", {s: int((v < inputs - 0.1).sum()) for s, v in real.items()})
rng = np.random.default_rng(0)
cleans = [read(p) for p in sorted((SHARED / "denoise" / "test" / "cbsd68").iterdir())[:int(sys.argv[2])]]
noisies = [c + rng.standard_normal(c.shape).astype(np.float32) * np.float32(25 / 255) for c in cleans]
gauss = {s: np.mean([psnr(run(n, s), c) for n, c in zip(noisies, cleans, strict=True)]) for s in SCALES}
print("cbsd68 s25", len(cleans), {s: round(float(v), 3) for s, v in gauss.items()})
