"""Real noisy photos (RNI15, no clean reference): the estimated noise level, BRISQUE before and after blind
denoising, and a contact sheet
(noisy | denoised) in docs/rni15.jpg.

python -m bench.rni15
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core import quality
from core.config import get_settings
from models.registry import load_denoiser


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("docs/rni15.jpg"))
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    s = get_settings()
    net = load_denoiser("ffdnet", s.weights_dir, "cpu")
    rows, tiles = [], []
    for f in sorted((s.shared_data / "denoise" / "real" / "rni15").iterdir()):
        img = Image.open(f)
        pixels = np.asarray(img.convert("RGB" if img.mode not in ("L", "I;16") else "L"), np.float32) / 255
        pixels = pixels if pixels.ndim == 3 else pixels[..., None]
        (out,), (level,) = net.many([pixels], [None], s.tile_size, s.tile_overlap)  # blind: the estimated map
        sigma = level * 255
        rows.append((f.name, sigma, quality.brisque(pixels), quality.brisque(out)))
        pair = np.concatenate([pixels, out], axis=1)
        pair = np.repeat(pair, 3, axis=2) if pair.shape[2] == 1 else pair
        tile = Image.fromarray((pair * 255).round().astype(np.uint8))
        tiles.append(tile.resize((640, round(640 * tile.height / tile.width))))
    print("| image | sigma estimate | BRISQUE noisy | BRISQUE denoised |\n|---|---|---|---|")
    for name, sigma, before, after in rows:
        print(f"| {name} | {sigma:.1f} | {before:.1f} | {after:.1f} |")
    means = np.mean([r[2:] for r in rows], axis=0)
    print(f"| mean | | {means[0]:.1f} | {means[1]:.1f} |\n\ncommand: python -m bench.rni15 (BRISQUE: lower is better)")
    sheet = Image.new("RGB", (1280, sum(t.height for t in tiles[::2]) + 10), "white")
    y = 0
    for i in range(0, len(tiles), 2):
        for j, t in enumerate(tiles[i:i + 2]):
            sheet.paste(t, (j * 640, y))
        y += max(t.height for t in tiles[i:i + 2])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(a.out, quality=85)


if __name__ == "__main__":
    main()
