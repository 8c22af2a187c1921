"""The stage order, in one place: decode -> (synthetic noise) -> noise estimate and denoise -> metrics ->
captions -> store. `run_item` owns it with per-item isolation: whatever one item does (a broken file, a model
that will not load, a time-out, a bug) fails that item alone, with its reason. The worker, `denocap run` and
the tests call it; storage and the database come in as a `Sink`, so this module does no I/O of its own."""
import logging
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from core import quality
from core.imageio import ImageError, Limits, Picture, decode
from core.options import BatchOptions
from core.storage import StorageUnavailable
from models.registry import CaptionBackend, Denoiser, ModelError

log = logging.getLogger(__name__)
UNDENOISED = "the denoiser gave no usable result for this image: the denoised image is the input, unchanged"
PSNR_CAP = 100.0  # dB: identical images have an infinite PSNR, which JSON cannot carry


@dataclass(frozen=True)
class Job:
    item_id: str
    options: BatchOptions
    load: Callable[[], tuple[bytes, bytes | None]]  # the upload and its clean reference, if any
    page: int | None = None  # of a multi-page TIFF (imageio.full_pages' number), or the file's picture


@dataclass
class Result:
    noisy: Picture  # what the denoiser saw
    denoised: Picture
    sigma_estimate: float  # 0-255 scale: the mean of the estimated noise map
    metrics: dict[str, float | None]
    caption: str
    caption_noisy: str
    denoiser_version: str
    captioner_version: str
    noisy_is_upload: bool = True  # no synthetic noise, one picture: the noisy image is the upload, already stored
    timings: dict[str, float] = field(default_factory=dict)


class Models(Protocol):
    """Loaded models by name, cached by the caller; a bad name or missing weights raise ModelError."""
    def denoiser(self, name: str) -> Denoiser: ...
    def captioner(self, name: str) -> CaptionBackend: ...


class Sink(Protocol):
    def done(self, item_id: str, result: Result) -> None: ...
    def failed(self, item_id: str, reason: str, kind: str) -> None: ...
    def handed_back(self, item_id: str) -> None: ...  # to run again, first in another task


@dataclass(frozen=True)
class Runtime:
    limits: Limits
    tile: int = 512
    overlap: int = 32


def run_item(job: Job, models: Models, runtime: Runtime, sink: Sink,
             time_limit: tuple[type[BaseException], ...] = (), first: bool = True) -> bool:
    """Runs one item and hands its result or its failure to the sink. Returns False when the time limit struck:
    the item is failed with "time limit" if it ran first in its task (it had the task's whole time), else handed
    back, since the items before it took the time; the caller stops and queues the rest again. The file storage
    down is no item's fault: the item is handed back and StorageUnavailable raised, for the caller to stop."""
    try:
        data, reference = job.load()
        result = process(data, reference, job.options, models, runtime, job.page)
        sink.done(job.item_id, result)
    except StorageUnavailable:
        sink.handed_back(job.item_id)
        raise
    except (*time_limit, ImageError) as e:
        if isinstance(e, time_limit) or isinstance(e.__context__, time_limit):  # the decoder's catch-all wraps a
            # time limit that strikes inside it as a broken image
            if first:
                sink.failed(job.item_id, "time limit: the item took longer than the task may run", "time_limit")
            else:
                sink.handed_back(job.item_id)
            return False
        sink.failed(job.item_id, str(e), e.kind)
    except ModelError as e:
        sink.failed(job.item_id, str(e), "model")
    except Exception as e:
        log.exception("item %s failed", job.item_id)
        sink.failed(job.item_id, f"internal error: {type(e).__name__}: {e}", "internal")
    return True


def process(data: bytes, reference: bytes | None, options: BatchOptions, models: Models, runtime: Runtime,
            page: int | None = None) -> Result:
    """One image (that page of a multi-page TIFF), start to end (no storage, no database)."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    picture = decode(data, runtime.limits, page)
    ref = decode(reference, runtime.limits) if reference is not None else None
    if options.add_noise is not None:  # each image its own noise: of the seed, the file and the page
        ref, picture = picture, add_noise(picture, options.add_noise, (options.seed, zlib.crc32(data), page or 0))
    if ref is not None and ref.pixels.shape != picture.pixels.shape:  # a gray reference of a colour image too
        raise ImageError(f"reference is {_size(ref)}, the image is {_size(picture)}")
    timings["decode"] = _lap(t)
    t = time.perf_counter()
    denoiser = models.denoiser(options.denoiser)
    denoised, estimate = denoise(picture, options.denoise_sigma, denoiser, runtime)
    timings["denoise"] = _lap(t)
    t = time.perf_counter()
    metrics = _metrics(picture, denoised, ref)
    timings["metrics"] = _lap(t)
    t = time.perf_counter()
    captioner = models.captioner(options.captioner)
    caption, caption_noisy = captioner([_seen(denoised), _seen(picture)])
    timings["caption"] = _lap(t)
    return Result(picture, denoised, estimate, metrics, caption, caption_noisy, f"{denoiser.name}@{denoiser.version}",
                  f"{captioner.name}@{captioner.version}", options.add_noise is None and page is None, timings)


def _size(picture: Picture) -> str:
    h, w, c = picture.pixels.shape
    return f"{w}x{h} {'gray' if c == 1 else 'colour'}"


def _seen(picture: Picture) -> np.ndarray:
    """The pixels as a viewer shows them, over white: what is under a transparent part is not in the picture (a
    logo's background is often black there)."""
    if picture.alpha is None:
        return picture.pixels
    alpha = picture.alpha[..., None]
    return np.clip(picture.pixels, 0, 1) * alpha + (1 - alpha)


def _lap(start: float) -> float:
    return time.perf_counter() - start


def add_noise(picture: Picture, sigma: float, seed: int | Sequence[int]) -> Picture:
    """Gaussian noise of std sigma (0-255 scale), clipped to the image's range as a camera's photo is: the noisy
    image stored, scored and captioned is the one the denoiser is given. (The denoiser cards' benchmarks follow the
    papers, whose noise is not clipped.)"""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(picture.pixels.shape, dtype=np.float32) * np.float32(sigma / 255.0)
    return replace(picture, pixels=np.clip(picture.pixels + noise, 0, 1))


def denoise(picture: Picture, sigma: float | None, denoiser: Denoiser, runtime: Runtime) -> tuple[Picture, float]:
    """The denoised picture and the estimated noise level (0-255). sigma (0-255) overrides the estimated map.
    A result that is not finite everywhere (it never should be) gives the input back, with a note, rather than
    black pixels; so does sigma 0, "no noise", which the network at level 0 still takes as a licence to smooth: the
    network is not run, and the level is the one given, 0."""
    if sigma == 0:
        return picture, 0.0
    (pixels,), (level,) = denoiser.many([picture.pixels], [None if sigma is None else sigma / 255.0],
                                        runtime.tile, runtime.overlap)
    notes = picture.notes
    if not np.isfinite(pixels).all():
        log.warning("the denoiser returned non-finite pixels; keeping the input")
        pixels, notes = np.clip(np.nan_to_num(picture.pixels), 0, 1), (*notes, UNDENOISED)
    return replace(picture, pixels=pixels, notes=notes), (level * 255.0 if math.isfinite(level) else 0.0)


def _metrics(noisy: Picture, denoised: Picture, reference: Picture | None) -> dict[str, float | None]:
    if reference is None:
        return {"brisque_noisy": _finite(quality.brisque(noisy.pixels)),
                "brisque": _finite(quality.brisque(denoised.pixels))}
    ref = np.clip(reference.pixels, 0, 1)
    return {"psnr_noisy": min(quality.psnr(ref, noisy.pixels), PSNR_CAP), "ssim_noisy": _finite(quality.ssim(ref, noisy.pixels)),
            "psnr": min(quality.psnr(ref, denoised.pixels), PSNR_CAP), "ssim": _finite(quality.ssim(ref, denoised.pixels))}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
