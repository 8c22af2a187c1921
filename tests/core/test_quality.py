"""Quality scores: BRISQUE with the brisque package's waste taken out gives the package's own score."""
import numpy as np
import skimage.data
from brisque import BRISQUE

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
