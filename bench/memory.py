"""Peak resident memory of denoising one large photo through the tiled path (default 6000x4000 RGB).

python -m bench.memory [--width 6000 --height 4000]
"""
import argparse
import resource
import time

import numpy as np
import torch

from core.config import get_settings
from models.registry import load_denoiser


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--width", type=int, default=6000)
    p.add_argument("--height", type=int, default=4000)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    s = get_settings()
    net = load_denoiser("ffdnet", s.weights_dir, "cpu")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    image = np.random.default_rng(0).uniform(0, 1, (a.height, a.width, 3)).astype(np.float32)
    t = time.perf_counter()
    out = net(image, 25 / 255, s.tile_size, s.tile_overlap)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{a.width}x{a.height} RGB, tile {s.tile_size}, overlap {s.tile_overlap}: {seconds:.1f} s, "
          f"peak RSS {peak:.0f} MiB (after loading the model {before:.0f} MiB; the image in and out as float32 "
          f"is {2 * image.nbytes / 2**20:.0f} MiB), output {out.shape}")
    print(f"command: python -m bench.memory --width {a.width} --height {a.height} --threads {a.threads}")


if __name__ == "__main__":
    main()
