"""Synthetic camera noise for training, on the training device (no real noisy/clean pairs needed).

A clean sRGB patch is taken back to linear camera values through a random response curve, a random colour
matrix and white-balance gains (after Brooks et al., "Unprocessing Images for Learned Raw Denoising", CVPR 2019),
mosaicked (Bayer, a random phase), given shot and read noise whose levels follow the paper's log-linear relation,
the noise demosaicked bilinearly (so it is spatially correlated, as in CBDNet, Guo et al., CVPR 2019), often
low-passed (in-camera noise reduction and resampling leave blotchy noise, as BSRGAN's shuffle of noise and resizing
does), taken back through the same curve and, often, JPEG-compressed. The other samples get white Gaussian noise, the case the
network handled before, so synthetic-noise scores do not fall. Every range is stated once, in `Ranges`.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg


@dataclass(frozen=True)
class Ranges:
    gaussian_share: float = 0.4  # samples with white Gaussian noise instead of camera noise
    gaussian_sigma: tuple[float, float] = (0.0, 75.0 / 255.0)  # uniform
    gamma: tuple[float, float] = (1.8, 2.6)  # response curve x ** (1 / gamma), uniform
    ccm_mix: tuple[float, float] = (0.0, 0.4)  # camera matrix = (1 - w) I + w (random row-stochastic)
    red_gain: tuple[float, float] = (1.9, 2.4)  # white balance (Brooks et al.)
    blue_gain: tuple[float, float] = (1.5, 1.9)
    shot: tuple[float, float] = (1e-4, 1.2e-2)  # variance per unit of signal, log-uniform (Brooks et al.)
    read_slope: float = 2.18  # log read = slope * log shot + intercept + N(0, read_spread)
    read_intercept: float = 1.20
    read_spread: float = 0.26
    channel_jitter: tuple[float, float] = (0.8, 1.25)  # per-channel factor on the shot variance
    smear_share: float = 0.5  # camera-noise samples whose noise is low-passed (in-camera noise reduction)
    smear_sigma: tuple[float, float] = (0.4, 1.6)  # px, uniform: Gaussian blur of the noise, its variance kept
    jpeg_share: float = 0.7  # camera-noise samples that are then JPEG-compressed
    jpeg_quality: tuple[int, int] = (60, 98)  # uniform, inclusive


def _uniform(n: int, bounds: tuple[float, float], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return bounds[0] + (bounds[1] - bounds[0]) * torch.rand(n, generator=gen, device=device)


def _bayer_masks(n: int, h: int, w: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, 3, h, w) one-hot colour of each photosite: RGGB under a random one of its four phases."""
    base = torch.zeros(3, 2, 2, device=device)
    base[0, 0, 0] = base[1, 0, 1] = base[1, 1, 0] = base[2, 1, 1] = 1
    tiled = base.repeat(1, h // 2 + 2, w // 2 + 2)
    shift = torch.randint(2, (n, 2), generator=gen, device=device)
    return torch.stack([tiled[:, int(dy):int(dy) + h, int(dx):int(dx) + w] for dy, dx in shift])


def _demosaic(planes: torch.Tensor) -> torch.Tensor:
    """Bilinear demosaicking of (n, 3, h, w) masked colour planes (zeros where a photosite has another colour)."""
    rb = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=planes.dtype, device=planes.device) / 4
    g = torch.tensor([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=planes.dtype, device=planes.device) / 4
    kernels = torch.stack([rb, g, rb])[:, None]  # (3, 1, 3, 3)
    return F.conv2d(F.pad(planes, (1, 1, 1, 1), mode="reflect"), kernels, groups=3)


def _camera_matrix(n: int, ranges: Ranges, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, 3, 3) linear sRGB -> camera colours: identity mixed with a random row-stochastic matrix."""
    rand = torch.rand(n, 3, 3, generator=gen, device=device)
    w = _uniform(n, ranges.ccm_mix, gen, device).view(-1, 1, 1)
    return (1 - w) * torch.eye(3, device=device) + w * rand / rand.sum(-1, keepdim=True)


def _smear(noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each (3, h, w) noise field in the batch blurred by a Gaussian of its own sigma (px), then scaled back to
    its standard deviation per channel: the level stays, the high frequencies go."""
    r = torch.arange(-4, 5, dtype=noise.dtype, device=noise.device)
    g = torch.exp(-r**2 / (2 * sigma.view(-1, 1).to(noise.dtype) ** 2))
    g = g / g.sum(1, keepdim=True)  # (n, 9)
    n, c, h, w = noise.shape
    kernels = g.repeat_interleave(c, 0)  # (n * c, 9): separable, one per field
    x = F.pad(noise.reshape(1, n * c, h, w), (4, 4, 4, 4), mode="reflect")
    x = F.conv2d(F.conv2d(x, kernels.view(-1, 1, 9, 1), groups=n * c), kernels.view(-1, 1, 1, 9), groups=n * c)
    x = x.view(n, c, h, w)
    return x * noise.std((2, 3), keepdim=True) / x.std((2, 3), keepdim=True).clamp(min=1e-8)


def camera_noise(clean: torch.Tensor, ranges: Ranges, gen: torch.Generator) -> torch.Tensor:
    """clean: (n, 3, h, w) sRGB in [0, 1], h and w even. Returns the noisy sRGB image, clipped to [0, 1]."""
    n, _, h, w = clean.shape
    dev = clean.device
    gamma = _uniform(n, ranges.gamma, gen, dev).view(-1, 1, 1, 1)
    to_camera = _camera_matrix(n, ranges, gen, dev)
    gains = torch.stack([_uniform(n, ranges.red_gain, gen, dev), torch.ones(n, device=dev),
                         _uniform(n, ranges.blue_gain, gen, dev)], 1).view(-1, 3, 1, 1)
    camera = torch.einsum("nij,njhw->nihw", to_camera, clean.clamp(0, 1) ** gamma) / gains
    log_shot = _uniform(n, (math.log(ranges.shot[0]), math.log(ranges.shot[1])), gen, dev)
    log_read = (ranges.read_slope * log_shot + ranges.read_intercept
                + ranges.read_spread * torch.randn(n, generator=gen, device=dev))
    shot = log_shot.exp().view(-1, 1, 1, 1) * _uniform(3 * n, ranges.channel_jitter, gen, dev).view(-1, 3, 1, 1)
    masks = _bayer_masks(n, h, w, gen, dev)
    variance = ((shot * camera.clamp(min=0) + log_read.exp().view(-1, 1, 1, 1)) * masks).sum(1, keepdim=True)
    site_noise = torch.randn(variance.shape, generator=gen, device=dev) * variance.sqrt()  # (n, 1, h, w)
    noise = _demosaic(site_noise * masks)
    smear = torch.rand(n, generator=gen, device=dev) < ranges.smear_share
    if smear.any():
        noise[smear] = _smear(noise[smear], _uniform(int(smear.sum()), ranges.smear_sigma, gen, dev))
    noisy_camera = camera + noise
    linear = torch.einsum("nij,njhw->nihw", torch.linalg.inv(to_camera), noisy_camera * gains)
    return linear.clamp(0, 1) ** (1 / gamma)


def jpeg(images: torch.Tensor, qualities: list[int]) -> torch.Tensor:
    """Each (3, h, w) image in [0, 1] through JPEG at its quality (encoded on the CPU)."""
    out = [decode_jpeg(encode_jpeg((im * 255).round().to(torch.uint8).cpu(), quality=q)) for im, q in
           zip(images, qualities, strict=True)]
    return torch.stack(out).to(images.device).float() / 255


def degrade(clean: torch.Tensor, gen: torch.Generator, ranges: Ranges = Ranges()) -> torch.Tensor:
    """clean: (n, C, h, w) in [0, 1], C = 1 or 3 (gray is taken through the colour model, then averaged).
    Returns the noisy batch: Gaussian samples are not clipped (the papers' protocol), camera ones are."""
    n, channels = clean.shape[:2]
    dev = clean.device
    rgb = clean.expand(-1, 3, -1, -1)
    noisy = camera_noise(rgb, ranges, gen)
    compress = torch.rand(n, generator=gen, device=dev) < ranges.jpeg_share
    if compress.any():
        lo, hi = ranges.jpeg_quality
        qualities = torch.randint(lo, hi + 1, (int(compress.sum()),), generator=gen, device=dev).tolist()
        noisy[compress] = jpeg(noisy[compress], qualities)
    noisy = noisy if channels == 3 else noisy.mean(1, keepdim=True)
    sigma = _uniform(n, ranges.gaussian_sigma, gen, dev).view(-1, 1, 1, 1)
    gaussian = clean + torch.randn(clean.shape, generator=gen, device=dev) * sigma
    pick = (torch.rand(n, generator=gen, device=dev) < ranges.gaussian_share).view(-1, 1, 1, 1)
    return torch.where(pick, gaussian, noisy)


def level_map(noisy: torch.Tensor, clean: torch.Tensor, window: int = 5) -> torch.Tensor:
    """What the estimator learns: the local noise standard deviation per channel, (n, C, h/2, w/2), from the
    mean squared noise over 2x2 sites smoothed by a `window` box at half resolution."""
    power = F.avg_pool2d((noisy - clean) ** 2, 2, ceil_mode=True)
    pad = window // 2
    return F.avg_pool2d(F.pad(power, (pad, pad, pad, pad), mode="replicate"), window, stride=1).sqrt()
