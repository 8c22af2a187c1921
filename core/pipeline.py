"""decode -> (synthetic noise) -> noise estimate -> denoise -> metrics -> caption. Pure functions, no Celery, no DB."""
import time
from dataclasses import dataclass, field, replace

import numpy as np

from core import quality
from core.imageio import ImageError, Limits, Picture, decode
from models.registry import CaptionBackend, Denoiser


@dataclass(frozen=True)
class Options:
    add_noise: float | None = None  # sigma on the 0-255 scale; the clean upload becomes the reference
    seed: int = 0
    denoise_sigma: float | None = None  # 0-255; None: estimated per image
    tile: int = 512
    overlap: int = 32


@dataclass
class Restored:
    noisy: Picture
    denoised: Picture
    reference: Picture | None
    sigma_estimate: float  # 0-255 scale
    metrics: dict[str, float]
    denoiser_version: str
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Result:
    restored: Restored
    caption: str
    caption_noisy: str
    captioner_version: str


def add_noise(picture: Picture, sigma: float, seed: int) -> Picture:
    """Gaussian noise of std sigma (0-255 scale), not clipped, as in the papers' protocol."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(picture.pixels.shape, dtype=np.float32) * np.float32(sigma / 255.0)
    return replace(picture, pixels=picture.pixels + noise)


@dataclass
class Prepared:
    """An image ready for the denoiser: the (noisy) input, its reference, the noise estimate."""
    picture: Picture
    reference: Picture | None
    sigma_estimate: float  # 0-255 scale
    sigma: float  # what the denoiser is told, 0-255
    timings: dict[str, float] = field(default_factory=dict)


def prepare(picture: Picture, options: Options, reference: Picture | None = None) -> Prepared:
    t = time.perf_counter()
    if options.add_noise is not None:
        reference, picture = picture, add_noise(picture, options.add_noise, options.seed)
    if reference is not None and reference.shape != picture.shape:
        raise ImageError(f"reference is {reference.shape}, the image is {picture.shape}")
    estimate = quality.noise_level(picture.pixels) * 255.0  # synthetic noise is not clipped (papers' protocol)
    sigma = options.denoise_sigma if options.denoise_sigma is not None else estimate
    return Prepared(picture, reference, estimate, sigma, {"estimate": time.perf_counter() - t})


def restore_many(prepared: list[Prepared], denoiser: Denoiser, tile: int, overlap: int) -> list[Restored]:
    """Denoises the images together (same-size tiles share forward passes on a GPU), then scores each."""
    t = time.perf_counter()
    outs = denoiser.many([p.picture.pixels for p in prepared], [p.sigma / 255.0 for p in prepared], tile, overlap)
    per_image = (time.perf_counter() - t) / max(len(prepared), 1)
    restored = []
    for p, pixels in zip(prepared, outs, strict=True):
        t = time.perf_counter()
        denoised = replace(p.picture, pixels=pixels)
        noisy = replace(p.picture, pixels=np.clip(p.picture.pixels, 0, 1))
        metrics = _metrics(noisy, denoised, p.reference)
        timings = {**p.timings, "denoise": per_image, "metrics": time.perf_counter() - t}
        restored.append(Restored(noisy, denoised, p.reference, p.sigma_estimate, metrics,
                                 f"{denoiser.name}@{denoiser.version}", timings))
    return restored


def restore(picture: Picture, options: Options, denoiser: Denoiser, reference: Picture | None = None) -> Restored:
    return restore_many([prepare(picture, options, reference)], denoiser, options.tile, options.overlap)[0]


def _metrics(noisy: Picture, denoised: Picture, reference: Picture | None) -> dict[str, float]:
    if reference is None:
        return {"brisque_noisy": quality.brisque(noisy.pixels), "brisque": quality.brisque(denoised.pixels)}
    ref = reference.pixels
    return {"psnr_noisy": quality.psnr(ref, noisy.pixels), "ssim_noisy": quality.ssim(ref, noisy.pixels),
            "psnr": quality.psnr(ref, denoised.pixels), "ssim": quality.ssim(ref, denoised.pixels)}


def describe(restored: list[Restored], captioner: CaptionBackend) -> list[Result]:
    """Captions of the denoised and the noisy image of every item, encoded as one micro-batch."""
    t = time.perf_counter()
    images = [r.denoised.pixels for r in restored] + [r.noisy.pixels for r in restored]
    captions = captioner(images)
    per_item = (time.perf_counter() - t) / max(len(restored), 1)
    results = []
    for i, r in enumerate(restored):
        r.timings["caption"] = per_item
        results.append(Result(r, captions[i], captions[len(restored) + i], f"{captioner.name}@{captioner.version}"))
    return results


def prepare_bytes(data: bytes, reference: bytes | None, options: Options, limits: Limits) -> Prepared:
    """decode (image and optional reference) then prepare; the worker calls this per item."""
    t = time.perf_counter()
    picture = decode(data, limits)
    ref = decode(reference, limits) if reference is not None else None
    decode_s = time.perf_counter() - t
    prepared = prepare(picture, options, ref)
    prepared.timings["decode"] = decode_s
    return prepared


def process(data: bytes, options: Options, limits: Limits, denoiser: Denoiser, captioner: CaptionBackend,
            reference: bytes | None = None) -> Result:
    """One image, start to end."""
    prepared = prepare_bytes(data, reference, options, limits)
    return describe(restore_many([prepared], denoiser, options.tile, options.overlap), captioner)[0]
