"""Quality scores: BRISQUE with the brisque package's waste taken out gives the package's own score; SSIM by
OpenCV's box filter gives scikit-image's."""
import cv2
import numpy as np
import pytest
import skimage.data
from brisque import BRISQUE
from skimage.metrics import structural_similarity

from core import quality


class PackageBrisque(BRISQUE):
    def scale_features(self, features):  # type: ignore[no-untyped-def]
        return super().scale_features([np.asarray(f, dtype=np.float64).item() for f in features])


def test_brisque_equals_the_package_score() -> None:
    package = PackageBrisque(url=False)
    noisy = np.clip(skimage.data.coffee() + np.random.default_rng(0).normal(0, 20, (400, 600, 3)), 0, 255)
    for img in (skimage.data.coffee(), noisy.astype(np.uint8), skimage.data.chelsea()[:97, :131]):
        ours = quality.brisque(img.astype(np.float32) / 255)
        assert ours is not None and abs(ours - package.score(img)) < 0.01


def test_brisque_none_for_images_too_small_to_score() -> None:
    assert quality.brisque(np.zeros((15, 40, 3), np.float32)) is None
    strip = np.random.default_rng(0).random((16, 16384, 3), dtype=np.float32)  # a panorama: one row once shrunk
    assert quality.brisque(strip) is None  # it failed its item as an internal error (OpenCV's resize)


@pytest.mark.parametrize("shape", [(96, 80, 3), (40, 64, 1), (5, 30, 3), (4, 4, 1)])
def test_ssim_equals_scikit_image(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(1)
    ref = cv2.GaussianBlur(rng.random(shape, dtype=np.float32), (0, 0), 2).reshape(shape)
    test = ref + rng.normal(0, 0.1, shape).astype(np.float32)
    side = min(shape[:2])
    window = min(7, side if side % 2 else side - 1)  # the largest odd window that fits, at most 7
    expected = structural_similarity(ref, np.clip(test, 0, 1), data_range=1.0, channel_axis=-1, win_size=window)
    assert quality.ssim(ref, test) == pytest.approx(expected, abs=1e-5)
    assert quality.ssim(ref, ref) == pytest.approx(1.0, abs=1e-6)


def test_ssim_none_under_three_pixels() -> None:
    assert quality.ssim(np.zeros((2, 50, 3), np.float32), np.zeros((2, 50, 3), np.float32)) is None


def test_a_flat_image_has_no_brisque_score_and_says_nothing_on_stderr() -> None:
    import math
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's divide warnings printed a source line per flat image
        score = quality.brisque(np.zeros((64, 64, 3), np.float32))
    assert score is None or math.isnan(score)


def test_identical_images_have_an_infinite_psnr_and_say_nothing_on_stderr() -> None:
    """`denocap compare` of identical images printed NumPy's divide-by-zero warning, two lines an image."""
    import warnings
    image = np.full((8, 8, 3), 0.5, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert quality.psnr(image, image) == float("inf")
