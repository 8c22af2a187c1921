"""Error of the noise-level estimates: the denoiser's learned map (its mean, what users see) and scikit-image's
wavelet MAD, on synthetic Gaussian noise (CBSD68, BSD68) and on real camera noise (PolyU, where the truth is the
RMS of noisy - clean).

python -m bench.noise_estimate [--sigmas 5,10,15,25,35,50,75] [--limit N] [--threads 2]
"""
import argparse

import numpy as np
import torch
from PIL import Image

from core import quality
from core.config import get_settings
from models.registry import load_denoiser


def read(path, mode: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    a = np.asarray(Image.open(path).convert(mode), np.float32) / 255
    return a if a.ndim == 3 else a[..., None]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sigmas", default="5,10,15,25,35,50,75")
    p.add_argument("--limit", type=int)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    s = get_settings()
    net = load_denoiser("ffdnet", s.weights_dir, "cpu")

    def learned(x: np.ndarray) -> float:
        return net.many([x], [None], s.tile_size, s.tile_overlap)[1][0] * 255

    root = s.shared_data / "denoise"
    print("| set | true sigma | learned: mean estimate | mean abs error | wavelet: mean estimate | mean abs error |\n"
          "|---|---|---|---|---|---|")
    for name, mode in (("cbsd68", "RGB"), ("bsd68", "L")):
        images = [read(f, mode) for f in sorted((root / "test" / name).iterdir())[:a.limit]]
        for sigma in (float(v) for v in a.sigmas.split(",")):
            noisy = [c + np.random.default_rng(i).standard_normal(c.shape).astype(np.float32) * sigma / 255
                     for i, c in enumerate(images)]
            ours, wavelet = [learned(x) for x in noisy], [quality.noise_level(x) * 255 for x in noisy]
            print(f"| {name} | {sigma:g} | {np.mean(ours):.2f} | {np.mean(np.abs(np.subtract(ours, sigma))):.2f} | "
                  f"{np.mean(wavelet):.2f} | {np.mean(np.abs(np.subtract(wavelet, sigma))):.2f} |", flush=True)
    polyu = root / "real" / "polyu"
    names = sorted(f.name for f in (polyu / "noisy").iterdir())[:a.limit]
    truth, ours, wavelet = [], [], []
    for n in names:
        noisy, clean = read(polyu / "noisy" / n, "RGB"), read(polyu / "clean" / n, "RGB")
        truth.append(float(np.sqrt(np.mean((noisy - clean) ** 2))) * 255)
        ours.append(learned(noisy))
        wavelet.append(quality.noise_level(noisy) * 255)
    print(f"| polyu (real) | {np.mean(truth):.2f} (RMS of noisy - clean) | {np.mean(ours):.2f} | "
          f"{np.mean(np.abs(np.subtract(ours, truth))):.2f} | {np.mean(wavelet):.2f} | "
          f"{np.mean(np.abs(np.subtract(wavelet, truth))):.2f} |")
    print(f"\ncommand: python -m bench.noise_estimate --sigmas {a.sigmas} --threads {a.threads}"
          + (f" --limit {a.limit}" if a.limit else ""))


if __name__ == "__main__":
    main()
