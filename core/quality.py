"""Noise-level estimate and image quality scores, all from kept libraries (scikit-image, brisque)."""
from functools import lru_cache

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.restoration import estimate_sigma

BRISQUE_MAX_SIDE = 1024


def noise_level(pixels: np.ndarray) -> float:
    """Gaussian noise standard deviation on the [0, 1] scale (wavelet MAD estimate, Donoho 1994)."""
    return float(estimate_sigma(pixels, channel_axis=-1, average_sigmas=True))


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    return float(peak_signal_noise_ratio(reference, np.clip(test, 0, 1), data_range=1.0))


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    return float(structural_similarity(reference, np.clip(test, 0, 1), data_range=1.0, channel_axis=-1))


@lru_cache
def _brisque():  # type: ignore[no-untyped-def]
    from brisque import BRISQUE

    class Brisque(BRISQUE):
        """brisque 0.2.0's fits return some features as 1-element arrays, which NumPy 2 refuses to float()."""

        def scale_features(self, features):  # type: ignore[no-untyped-def]
            return super().scale_features([np.asarray(f, dtype=np.float64).item() for f in features])

    return Brisque(url=False)


def brisque(pixels: np.ndarray) -> float:
    """BRISQUE (Mittal et al. 2012), lower is better; images are first shrunk to at most 1024 px a side."""
    img = np.clip(pixels, 0, 1)
    step = int(np.ceil(max(img.shape[:2]) / BRISQUE_MAX_SIDE))
    img = img[::step, ::step]
    rgb = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
    return float(_brisque().score(np.round(rgb * 255).astype(np.uint8)))
