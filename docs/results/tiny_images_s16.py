"""Session 16: the blind noise estimate of small crops against a 256 px crop of the same noisy photo, with the
shipped weights (float32): as the product runs it (small images mirrored out to 64 px a side, models.tiling), and
with zero padding alone (the crop given to the network as it is: what the product did before). Run from the
repository root: python docs/results/tiny_images_s16.py"""
from pathlib import Path

import numpy as np
import torch
from skimage import data

from models import tiling
from models.registry import load_denoiser


def main() -> None:
    torch.set_num_threads(1)
    denoiser = load_denoiser("ffdnet", Path("models/weights"), "cpu", precision="float32")
    clean, mirror = data.astronaut().astype(np.float32) / 255, tiling.mirrored
    for sigma in (0, 15, 25):
        noisy = clean + np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32) * sigma / 255
        whole = denoiser.many([noisy[100:356, 100:356]], [None], 512, 32)[1][0] * 255
        row = [f"sigma {sigma}: 256 px crop {whole:.1f}; side: mirrored / zero-padded"]
        for side in (1, 2, 4, 8, 16, 32, 64):
            crop = noisy[200:200 + side, 200:200 + side]
            mirrored = denoiser.many([crop], [None], 512, 32)[1][0] * 255
            tiling.mirrored = lambda x: x  # type: ignore[assignment] # what the product did before
            plain = denoiser.many([crop], [None], 512, 32)[1][0] * 255
            tiling.mirrored = mirror
            row.append(f"{side}: {mirrored:.1f} / {plain:.1f}")
        print("; ".join(row))


if __name__ == "__main__":
    main()
