"""GPU micro-batching: images/s of one worker's denoiser with one tile per forward pass against same-size tiles
of several images together (batch size from free GPU memory), in float32 and float16, in one run; and the PSNR
change that float16 makes on CBSD68 at sigma 25 (must stay within 0.02 dB).

python -m bench.gpu_batching [--images 64] [--size 1024]   (needs CUDA)
"""
import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from core import quality
from core.config import get_settings
from core.imageio import Limits, decode
from models.registry import load_denoiser


def images_per_s(denoiser, images: list[np.ndarray], tile: int, overlap: int) -> float:  # type: ignore[no-untyped-def]
    denoiser.many(images[:2], [None] * 2, tile, overlap)  # warm up
    torch.cuda.synchronize()
    t = time.perf_counter()
    for start in range(0, len(images), 8):  # a task's micro-batch of items
        chunk = images[start:start + 8]
        denoiser.many(chunk, [None] * len(chunk), tile, overlap)
    torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--size", type=int, default=1024)
    a = p.parse_args()
    assert torch.cuda.is_available(), "this benchmark needs a CUDA GPU"
    s = get_settings()
    auto = load_denoiser("ffdnet", s.weights_dir, "cuda", s.tile_size)
    rng = np.random.default_rng(0)
    images = [rng.random((a.size, a.size, 3), dtype=np.float32) for _ in range(a.images)]
    rows = {"one tile per pass, float32": replace(auto, max_batch=1, dtype=None),
            f"micro-batches of {auto.max_batch}, float32": replace(auto, dtype=None),
            f"micro-batches of {auto.max_batch}, float16": auto}
    rates = {name: images_per_s(d, images, s.tile_size, s.tile_overlap) for name, d in rows.items()}
    base = rates["one tile per pass, float32"]
    print(f"{torch.cuda.get_device_name()}: {a.images} images of {a.size}x{a.size}, tile {s.tile_size}")
    for name, rate in rates.items():
        print(f"  {name:32s} {rate:8.2f} images/s  ({rate / base:.2f}x)")
    folder = s.shared_data / "denoise" / "test" / "cbsd68"
    limits = Limits(1 << 30, 1 << 30, 1 << 16)
    deltas = []
    for path in sorted(folder.iterdir())[:68]:
        clean = decode(path.read_bytes(), limits).pixels
        noisy = clean + rng.standard_normal(clean.shape).astype(np.float32) * 25 / 255
        full = rows[f"micro-batches of {auto.max_batch}, float32"](noisy, 25 / 255, s.tile_size, s.tile_overlap)
        half = auto(noisy, 25 / 255, s.tile_size, s.tile_overlap)
        deltas.append(quality.psnr(clean, half) - quality.psnr(clean, full))
    print(f"float16 - float32 PSNR on CBSD68 sigma 25: mean {np.mean(deltas):+.4f} dB, worst {min(deltas):+.4f} dB")
    print(f"command: python -m bench.gpu_batching --images {a.images} --size {a.size}")


if __name__ == "__main__":
    main()
