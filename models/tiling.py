"""Denoising an image of any size in bounded memory: overlapping tiles, each keeping only its centre."""
import torch

from models.ffdnet import FFDNet


@torch.inference_mode()
def denoise_tiled(net: FFDNet, x: torch.Tensor, sigma: float, tile: int, overlap: int) -> torch.Tensor:
    """x: (1, C, H, W) in [0, 1] (noise may go past the range). Tiles of at most `tile` pixels a side overlap
    by `overlap` on each side, which exceeds the network's receptive radius, so the result equals an
    untiled pass up to floating point."""
    assert tile > 2 * overlap, f"tile ({tile}) must exceed twice the overlap ({overlap})"
    _, _, h, w = x.shape
    s = torch.tensor([sigma], dtype=x.dtype, device=x.device)
    if h <= tile and w <= tile:
        return net(x, s)
    out = torch.empty_like(x)
    step = tile - 2 * overlap
    for y in range(0, h, step):
        for x0 in range(0, w, step):
            top, left = max(y - overlap, 0), max(x0 - overlap, 0)
            bottom, right = min(y + step + overlap, h), min(x0 + step + overlap, w)
            piece = net(x[..., top:bottom, left:right], s)
            out[..., y:y + step, x0:x0 + step] = piece[..., y - top:y - top + step, x0 - left:x0 - left + step]
    return out
