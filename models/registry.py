"""Models by name: shipped weights under models/weights/, loaded once per process by the caller's cache."""
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from models import checkpoint
from models.captioner import Captioner, CaptionerConfig
from models.decode import BEAM, Ask, beam_searches
from models.encoder import Encoder
from models.ffdnet import FFDNet, FFDNetConfig
from models.grounding import Grounding, Guide, WordTable, guide, plain, read_table, realize
from models.names import CAPTIONERS, DENOISERS, ENSEMBLES, PRECISIONS
from models.precision import inference_dtype
from models.tiling import denoise_many
from models.vocab import Vocabulary

DENOISER_NETS = {"ffdnet": (FFDNetConfig, FFDNet)}
CAPTIONER_NETS = {"attention": (CaptionerConfig, Captioner)}  # and blip, from a transformers folder
assert set(DENOISER_NETS) == set(DENOISERS) and set(CAPTIONER_NETS) | {"blip"} == set(CAPTIONERS)


class CaptionBackend(Protocol):
    name: str
    version: str

    def __call__(self, images: list[np.ndarray]) -> list[str]: ...


class ModelError(ValueError):
    """Unknown model name or missing/unreadable weights."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise ModelError(f"device {name} asked for (DENOCAP_DEVICE), but this machine has no such CUDA GPU")
    return device


def version_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _restore(table: dict, name: str, path: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    if not path.is_file():
        raise ModelError(f"weights not found: {path}")
    ckpt = checkpoint.load(path, device)
    config_cls, model_cls = table[name]
    model = model_cls(config_cls(**ckpt["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state"].items()})
    return model.to(device).eval(), ckpt


@dataclass
class Denoiser:
    """A color network and, when shipped, a gray one; gray images fall back to the color net on three
    identical channels. On a GPU, same-size tiles of several images run together (max_batch); `dtype` is the
    reduced precision the networks run in (float16 on a GPU, bfloat16 on a CPU that has it), None for float32."""
    name: str
    version: str
    color: FFDNet
    gray: FFDNet | None
    max_batch: int = 1
    dtype: torch.dtype | None = None
    ensemble: int = 1  # 1, 2, 4 or 8 rotations/flips, averaged: more PSNR for proportionally more time

    def __call__(self, pixels: np.ndarray, sigma: float | None, tile: int, overlap: int) -> np.ndarray:
        """pixels: (H, W, C) float32; sigma on the [0, 1] scale, None for blind (the estimator's noise map).
        Returns the same shape, clipped to [0, 1]."""
        return self.many([pixels], [sigma], tile, overlap)[0][0]

    def many(self, images: list[np.ndarray], sigmas: list[float | None], tile: int,
             overlap: int) -> tuple[list[np.ndarray], list[float]]:
        """The denoised images and each one's estimated noise level ([0, 1] scale, the mean of the noise map)."""
        device = next(self.color.parameters()).device
        jobs: dict[int, list[tuple[int, torch.Tensor, float | None]]] = {}  # by network
        for i, (pixels, sigma) in enumerate(zip(images, sigmas, strict=True)):
            x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].to(device)
            if x.shape[1] == 1 and self.gray is None:
                # Gray noise repeated on three channels is all luminance; the color net was trained on independent
                # channel noise whose luminance part is sigma/sqrt(3), so it is told sqrt(3) sigma (on six BSD68
                # images at sigma 25 this gave 28.6 dB where sigma itself gave 25.7).
                x, sigma = x.expand(-1, 3, -1, -1), None if sigma is None else sigma * 3 ** 0.5
            jobs.setdefault(x.shape[1], []).append((i, x, sigma))
        out: list[np.ndarray] = [np.empty(0)] * len(images)
        estimates = [0.0] * len(images)
        for channels, group in jobs.items():
            net = self.gray if channels == 1 else self.color
            assert net is not None
            ys, levels = self._ensemble(net, [x for _, x, _ in group], [s for _, _, s in group], tile, overlap)
            for (i, _, _), y, level in zip(group, ys, levels, strict=True):
                if images[i].shape[2] == 1 and channels == 3:
                    y = y.mean(1, keepdim=True)
                out[i], estimates[i] = y.clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy(), level
        return out, estimates

    @torch.inference_mode()  # denoise_many's outputs are inference tensors; summed in place
    def _ensemble(self, net: FFDNet, xs: list[torch.Tensor], sigmas: list[float | None], tile: int,
                  overlap: int) -> tuple[list[torch.Tensor], list[float]]:
        """Geometric self-ensemble (Timofte et al., "Seven ways to improve example-based single image super
        resolution", 2016): the mean of the outputs for rotated and flipped inputs, each turned back."""
        total, levels = denoise_many(net, xs, sigmas, tile, overlap, self.max_batch, self.dtype)
        for t in range(1, self.ensemble):
            ys, _ = denoise_many(net, [transform(x, t) for x in xs], sigmas, tile, overlap, self.max_batch, self.dtype)
            for acc, y in zip(total, ys, strict=True):
                acc.add_(transform(y, t, inverse=True))
        return ([y.div_(self.ensemble) for y in total] if self.ensemble > 1 else total), levels


def transform(x: torch.Tensor, t: int, inverse: bool = False) -> torch.Tensor:
    """The t-th (1-7) of the 8 rotations and flips of (N, C, H, W), or its inverse."""
    if inverse:
        x = torch.rot90(x, -(t % 4), dims=(2, 3))
        return x.flip(3) if t >= 4 else x
    return torch.rot90(x.flip(3) if t >= 4 else x, t % 4, dims=(2, 3))


def gpu_batch(device: torch.device, config: FFDNetConfig, tile: int, sharing: int = 1) -> int:
    """Tiles per forward pass from this process's share of the free GPU memory, `sharing` processes using the GPU
    (a generous bound on the activations of one tile)."""
    free, _ = torch.cuda.mem_get_info(device)
    per_tile = 4 * 4 * config.features * tile * tile
    return max(1, min(64, int(0.4 * free / sharing / per_tile)))


def _precision(precision: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """The reduced dtype a network runs in (None: float32) and the suffix its version records."""
    if precision not in PRECISIONS:
        raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = None if precision == "float32" else inference_dtype(device)
    return dtype, {torch.float16: "-fp16", torch.bfloat16: "-bf16"}.get(dtype, "") if dtype else ""


def load_denoiser(name: str, weights_dir: Path, device: str = "auto", tile: int = 512,
                  precision: str = "auto", ensemble: int = 1, sharing: int = 1) -> Denoiser:
    """precision "auto": float16 on CUDA, bfloat16 on a CPU that runs it natively (models.precision), else
    float32; "float32": float32 everywhere. On CUDA, micro-batches are sized from this process's share of the free
    memory (`sharing` processes on the GPU). The version names
    a reduced precision ("-fp16", "-bf16") and a self-ensemble ("-x8"), so results record them."""
    if name not in DENOISERS:
        raise ModelError(f"unknown denoiser {name!r}; known: {', '.join(DENOISERS)}")
    if ensemble not in ENSEMBLES:
        raise ModelError(f"ensemble must be one of {', '.join(map(str, ENSEMBLES))}, got {ensemble}")
    dev = pick_device(device)
    dtype, suffix = _precision(precision, dev)
    color_path, gray_path = weights_dir / f"{name}_color.pt", weights_dir / f"{name}_gray.pt"
    fmt = torch.channels_last if dev.type == "cpu" else torch.contiguous_format  # as tiling feeds the tiles
    color = _restore(DENOISER_NETS, name, color_path, dev)[0].to(memory_format=fmt)
    gray = _restore(DENOISER_NETS, name, gray_path, dev)[0].to(memory_format=fmt) if gray_path.is_file() else None
    version = version_of(color_path) + (f"+{version_of(gray_path)}" if gray else "") + suffix
    version += f"-x{ensemble}" if ensemble > 1 else ""
    batch = gpu_batch(dev, color.config, tile, sharing) if dev.type == "cuda" else 1
    return Denoiser(name, version, color, gray, batch, dtype, ensemble)


@dataclass
class CaptionModel:
    name: str
    version: str
    encoder: Encoder
    decoder: Captioner
    vocab: Vocabulary
    beam: int = BEAM
    grounding: Grounding | None = None  # None: the decoder alone, as trained on Flickr8k
    table: WordTable | None = None

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray]) -> list[str]:
        """images: (H, W, C) float32 in [0, 1], C = 1 or 3; encoded in one batch, decoded together. Grounded, a
        picture of one colour is said to be one (models.grounding.plain), not decoded."""
        said = [plain(im) if self.grounding is not None else None for im in images]
        rest = [im for im, s in zip(images, said, strict=True) if s is None]
        decoded = iter(self.decode(rest) if rest else [])
        return [s if s is not None else next(decoded) for s in said]

    def decode(self, images: list[np.ndarray]) -> list[str]:
        device = next(self.decoder.parameters()).device
        features = self.encoder(torch.stack([_rgb_224(im, device) for im in images]))
        return self.captions(self.decoder.memory(features), self.guides(features))

    def guides(self, features: torch.Tensor) -> list[Guide]:
        """features: (N, 49, 1280) from the encoder -> what each caption must and must not say."""
        if self.grounding is None or self.table is None:
            return [Guide()] * len(features)
        probs = self.table.probabilities(self.encoder.classify(features))
        rows = zip(self.table.top(probs), self.table.top_kind(probs), self.grounding.evidence(probs, self.table),
                   self.grounding.people(features), strict=True)
        return [guide(word, kind, e, self.grounding, self.table, self.vocab, person) for word, kind, e, person in rows]

    def captions(self, memory: torch.Tensor, guides: list[Guide]) -> list[str]:
        """memory: (N, grid, d), a row and a guide per image; the images are decoded together."""
        v = self.vocab
        asks = [Ask(max(self.beam, 3) if g.start else self.beam,  # a forced subject reads better with a beam
                    (v.pad, v.bos, v.unk, *g.forbid), g.must, g.start) for g in guides]
        found = beam_searches(self.decoder, memory, v.bos, v.eos, asks)
        return [realize(v.decode(ids).split(), g) for ids, g in zip(found, guides, strict=True)]


def _rgb_224(image: np.ndarray, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(device)
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x
    return torch.nn.functional.interpolate(x[None], size=(224, 224), mode="bilinear", antialias=True)[0]


def load_captioner(name: str, weights_dir: Path, device: str = "auto", beam: int = BEAM, grounded: bool = True,
                   precision: str = "auto") -> CaptionBackend:
    """`attention` reads captioner.pt from weights_dir, and grounding.json beside it unless `grounded` is False
    (the encoder's ImageNet classifier guides decoding: models.grounding); `blip` reads a transformers folder
    (weights_dir itself). precision as for load_denoiser; it applies to the attention captioner's encoder (the
    decoder's steps are too small to gain), and its version says so."""
    if name not in CAPTIONERS:
        raise ModelError(f"unknown captioner {name!r}; known: {', '.join(CAPTIONERS)}")
    dev = pick_device(device)
    if name == "blip":
        if not (weights_dir / "config.json").is_file():
            raise ModelError(f"no BLIP model in {weights_dir} (config.json missing); pass --weights FOLDER")
        try:
            from models.blip import load_blip
        except ImportError:
            raise ModelError("the blip captioner needs transformers: pip install -e '.[blip]'") from None
        return load_blip(weights_dir, dev, beam)
    path = weights_dir / "captioner.pt"
    decoder, ckpt = _restore(CAPTIONER_NETS, name, path, dev)
    dtype, suffix = _precision(precision, dev)
    encoder, vocab = Encoder().to(dev).reduced(dtype), Vocabulary(ckpt["vocab"])
    version = version_of(path) + suffix
    ground = weights_dir / "grounding.json"
    if not (grounded and ground.is_file()):
        return CaptionModel(name, version, encoder, decoder, vocab, beam)
    return CaptionModel(name, f"{version}+{version_of(ground)}", encoder, decoder, vocab, beam,
                        Grounding.load(ground), read_table())
