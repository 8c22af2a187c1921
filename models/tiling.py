"""Denoising images of any size in bounded memory: overlapping tiles, each keeping only its centre. Tiles of
the same size from several images go through the network together (micro-batching, for GPUs)."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.ffdnet import FFDNet


@dataclass(frozen=True)
class Tile:
    image: int
    rows: slice  # the piece cut from the image, overlap included
    cols: slice
    keep_rows: slice  # the centre kept, in image coordinates
    keep_cols: slice


def plan(image: int, h: int, w: int, tile: int, overlap: int) -> list[Tile]:
    """Tiles of at most `tile` px a side overlapping by `overlap`. The network sees further than 32 px around a pixel
    (its convolutions at half resolution and its noise estimator's): the default 32 leaves the stitched result
    within 5e-5 of an untiled pass in float32 on a 500x700 photo, 48 within 3e-7, float rounding."""
    assert tile > 2 * overlap, f"tile ({tile}) must exceed twice the overlap ({overlap})"
    if h <= tile and w <= tile:
        return [Tile(image, slice(0, h), slice(0, w), slice(0, h), slice(0, w))]
    step = tile - 2 * overlap
    return [Tile(image, slice(max(y - overlap, 0), min(y + step + overlap, h)),
                 slice(max(x - overlap, 0), min(x + step + overlap, w)),
                 slice(y, min(y + step, h)), slice(x, min(x + step, w)))
            for y in range(0, h, step) for x in range(0, w, step)]


@torch.inference_mode()
def denoise_many(net: FFDNet, images: list[torch.Tensor], sigmas: list[float | None], tile: int, overlap: int,
                 max_batch: int = 1, dtype: torch.dtype | None = None) -> tuple[list[torch.Tensor], list[float]]:
    """images: (1, C, H, W) each, in [0, 1] (noise may go past the range); sigma per image on the same scale, or
    None for the estimator's noise map (blind). Returns the denoised images and each image's estimated noise
    (the mean of the estimator's map, [0, 1] scale; estimated whether or not a sigma was given).
    Same-size tiles of all images are run `max_batch` at a time, in `dtype` (e.g. float16 on a GPU). An image
    under MIN_SIDE a side is run mirrored out to it, and its level is the mean over the mirrored image."""
    sizes = [x.shape[-2:] for x in images]
    images = [mirrored(x) for x in images]
    outs = [torch.empty_like(x) for x in images]
    noise_sums = [0.0] * len(images)
    groups: dict[tuple[int, int], list[Tile]] = {}
    for i, x in enumerate(images):
        for t in plan(i, x.shape[-2], x.shape[-1], tile, overlap):
            groups.setdefault((t.rows.stop - t.rows.start, t.cols.stop - t.cols.start), []).append(t)
    for tiles in groups.values():
        for start in range(0, len(tiles), max_batch):
            chunk = tiles[start:start + max_batch]
            x = torch.cat([images[t.image][..., t.rows, t.cols] for t in chunk])
            if x.device.type == "cpu":  # oneDNN's convolutions run 1.1-1.5x faster on NHWC (bench.runtimes)
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
                estimate = net.estimate(x)  # (n, C, h/2, w/2)
                known = [sigmas[t.image] for t in chunk]
                level = torch.tensor([0.0 if s is None else s for s in known], device=x.device).view(-1, 1, 1, 1)
                blind = torch.tensor([s is None for s in known], device=x.device).view(-1, 1, 1, 1)
                y = net(x, torch.where(blind, estimate, level.to(estimate.dtype))).float()
            full = F.interpolate(estimate.float(), scale_factor=2.0, mode="nearest")
            for piece, noise, t in zip(y, full, chunk, strict=True):
                rows = slice(t.keep_rows.start - t.rows.start, t.keep_rows.stop - t.rows.start)
                cols = slice(t.keep_cols.start - t.cols.start, t.keep_cols.stop - t.cols.start)
                outs[t.image][0, :, t.keep_rows, t.keep_cols] = piece[:, rows, cols]
                noise_sums[t.image] += float(noise[:, rows, cols].sum())
    return ([y[..., :h, :w] for y, (h, w) in zip(outs, sizes, strict=True)],
            [total / x[0].numel() for total, x in zip(noise_sums, images, strict=True)])


MIN_SIDE = 64  # with zero padding all around, a 4 px crop of sigma-25 noise read as 72 (docs/results/tiny_images_s16)


def mirrored(x: torch.Tensor, side: int = MIN_SIDE) -> torch.Tensor:
    """x (N, C, H, W), mirrored at its bottom and right edges until both sides are at least `side`."""
    if min(x.shape[-2:]) == 1:  # nothing to mirror: repeat the one row or column once
        x = F.pad(x, (0, int(x.shape[-1] == 1), 0, int(x.shape[-2] == 1)), mode="replicate")
    while min(x.shape[-2:]) < side:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, min(max(side - w, 0), w - 1), 0, min(max(side - h, 0), h - 1)), mode="reflect")
    return x
