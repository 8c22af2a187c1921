"""Image quality scores from kept libraries (scikit-image, brisque, OpenCV); the noise estimate is the denoiser's."""
from functools import lru_cache

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio
from skimage.restoration import estimate_sigma

BRISQUE_MAX_SIDE = 1024
BRISQUE_MIN_SIDE = 16  # its features need a few pixels at half scale; smaller images get no score


def noise_level(pixels: np.ndarray) -> float:
    """Gaussian noise standard deviation on the [0, 1] scale (wavelet MAD estimate, Donoho 1994): the classical
    estimate, for benchmarks; blind on white Gaussian noise only."""
    return float(estimate_sigma(pixels, channel_axis=-1, average_sigmas=True))


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """inf for identical images (callers cap it), without NumPy's warning on stderr."""
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(reference, np.clip(test, 0, 1), data_range=1.0))


def ssim(reference: np.ndarray, test: np.ndarray) -> float | None:
    """scikit-image's structural_similarity (7x7 uniform window, sample covariance, K1 0.01, K2 0.03, the
    border cropped, channels averaged), its local means taken by OpenCV's box filter: 2.3x faster on a 512x512
    colour image, equal to 1e-5. None for images under 3 px a side; the window shrinks (odd, at most 7) to fit."""
    side = min(reference.shape[:2])
    if side < 3:
        return None
    win = min(7, side if side % 2 else side - 1)
    x, y = reference.astype(np.float32), np.clip(test, 0, 1).astype(np.float32)
    crop = (win - 1) // 2

    def mean(a: np.ndarray) -> np.ndarray:
        m = cv2.boxFilter(a, -1, (win, win), normalize=True, borderType=cv2.BORDER_REFLECT)
        return m[crop:m.shape[0] - crop, crop:m.shape[1] - crop]
    ux, uy, uxx, uyy, uxy = mean(x), mean(y), mean(x * x), mean(y * y), mean(x * y)
    sample = win * win / (win * win - 1)
    vx, vy, vxy = sample * (uxx - ux * ux), sample * (uyy - uy * uy), sample * (uxy - ux * uy)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return float(s.mean(dtype=np.float64))


@lru_cache
def _brisque():  # type: ignore[no-untyped-def]
    import cv2
    from brisque import BRISQUE
    from scipy import optimize, special
    from skimage.color import rgb2gray

    class Brisque(BRISQUE):
        """brisque 0.2.0, its score unchanged, with its waste taken out: score() computed full-scale MSCN
        coefficients it threw away; each of its Gaussian filters is a dense 7x7 scipy.signal.convolve2d (the same
        zero-padded kernel as two 1-D passes does the same sums); its fit of each of the 10 coefficient maps took
        the same masked sums of squares twice. Also, its fits return some features as 1-element arrays, which
        NumPy 2 refuses to float()."""

        def score(self, img):  # type: ignore[no-untyped-def]
            gray = rgb2gray(img).astype(np.float32)  # float32: 1.75x faster, within 0.003 of the package
            half = cv2.resize(gray, None, fx=1 / 2, fy=1 / 2, interpolation=cv2.INTER_CUBIC)
            features = [self.calculate_brisque_features(g, kernel_size=7, sigma=7 / 6) for g in (gray, half)]
            return self.calculate_image_quality_score(np.concatenate(features))

        def calculate_mscn_coefficients(self, image, kernel_size=7, sigma=7 / 6):  # type: ignore[no-untyped-def]
            x = np.arange(kernel_size) - kernel_size // 2
            g = np.exp(-x**2 / (2 * sigma**2))
            g /= g.sum()  # the package's normalised 2-D kernel is the outer product of this one with itself

            def blur(a: np.ndarray) -> np.ndarray:
                return cv2.sepFilter2D(a, -1, g, g, borderType=cv2.BORDER_CONSTANT)
            mean = blur(image)
            deviation = np.sqrt(np.abs(mean**2 - blur(image**2)))
            return (image - mean) / (deviation + 1 / 255)

        @np.errstate(divide="ignore", invalid="ignore")  # a flat image's fit: NaN, stored as none (pipeline._finite)
        def asymmetric_generalized_gaussian_fit(self, x):  # type: ignore[no-untyped-def]
            """The package's moment-matching fit, each sum taken once."""
            squares = np.square(x)
            negative = x < 0
            total, left, n_left = squares.sum(), np.sum(squares, where=negative), np.count_nonzero(negative)
            sigma_l, sigma_r = np.sqrt(left / n_left), np.sqrt((total - left) / (x.size - n_left))
            r_hat = (np.abs(x).sum() / x.size) ** 2 / (total / x.size)
            gamma = sigma_l / sigma_r
            big_r = r_hat * (gamma**3 + 1) * (gamma + 1) / (gamma**2 + 1) ** 2
            def phi(a):  # type: ignore[no-untyped-def]
                return special.gamma(2 / a) ** 2 / (special.gamma(1 / a) * special.gamma(3 / a))
            alpha = optimize.root(lambda a: phi(a) - big_r, [0.2]).x[0]
            mean = (sigma_r - sigma_l) * np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha)) * (
                special.gamma(2 / alpha) / special.gamma(1 / alpha))
            return alpha, mean, sigma_l, sigma_r

        def scale_features(self, features):  # type: ignore[no-untyped-def]
            return super().scale_features([np.asarray(f, dtype=np.float64).item() for f in features])

    return Brisque(url=False)


def brisque(pixels: np.ndarray) -> float | None:
    """BRISQUE (Mittal et al. 2012), lower is better; images are first shrunk to at most 1024 px a side.
    None for images under BRISQUE_MIN_SIDE a side once shrunk (a 16 x 16384 strip would be one row)."""
    step = int(np.ceil(max(pixels.shape[:2]) / BRISQUE_MAX_SIDE))
    img = np.clip(pixels[::step, ::step], 0, 1)
    if min(img.shape[:2]) < BRISQUE_MIN_SIDE:
        return None
    rgb = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
    return float(_brisque().score(np.round(rgb * 255).astype(np.uint8)))
