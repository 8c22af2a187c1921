"""Error of the noise-level estimate (scikit-image's wavelet MAD) on synthetic Gaussian noise, CBSD68 and BSD68.

python -m bench.noise_estimate [--sigmas 5,10,15,25,35,50,75]
"""
import argparse

import numpy as np
from PIL import Image

from core import quality
from core.config import get_settings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sigmas", default="5,10,15,25,35,50,75")
    p.add_argument("--limit", type=int)
    a = p.parse_args()
    root = get_settings().shared_data / "denoise" / "test"
    print("| set | sigma | mean estimate | mean abs error | max abs error | mean estimate, clipped to 0..255 |\n"
          "|---|---|---|---|---|---|")
    for name, mode in (("cbsd68", "RGB"), ("bsd68", "L")):
        images = [np.asarray(Image.open(f).convert(mode), np.float32) / 255 for f in sorted((root / name).iterdir())]
        for sigma in (float(s) for s in a.sigmas.split(",")):
            estimates, clipped = [], []
            for i, clean in enumerate(images[:a.limit]):
                clean = clean if clean.ndim == 3 else clean[..., None]
                noisy = clean + np.random.default_rng(i).standard_normal(clean.shape).astype(np.float32) * sigma / 255
                estimates.append(quality.noise_level(noisy) * 255)
                clipped.append(quality.noise_level(np.clip(noisy, 0, 1)) * 255)
            err = np.abs(np.array(estimates) - sigma)
            print(f"| {name} | {sigma:g} | {np.mean(estimates):.2f} | {err.mean():.2f} | {err.max():.2f} | "
                  f"{np.mean(clipped):.2f} |", flush=True)
    print(f"\ncommand: python -m bench.noise_estimate --sigmas {a.sigmas}" + (f" --limit {a.limit}" if a.limit else ""))


if __name__ == "__main__":
    main()
