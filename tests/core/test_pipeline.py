import numpy as np
import pytest

from core import pipeline, quality
from core.imageio import ImageError, Limits
from models.registry import load_captioner, load_denoiser
from tests.conftest import png, smooth_image

LIMITS = Limits(10_000_000, 10_000_000, 5000)


@pytest.fixture(scope="module")
def models(weights_dir):  # type: ignore[no-untyped-def]
    return load_denoiser("ffdnet", weights_dir, "cpu"), load_captioner("attention", weights_dir, "cpu", beam=2)


def test_synthetic_noise_gives_the_psnr_sigma_implies(models) -> None:  # type: ignore[no-untyped-def]
    denoiser, captioner = models
    result = pipeline.process(png(smooth_image(96, 128)), pipeline.Options(add_noise=25, seed=3), LIMITS, denoiser,
                              captioner)
    m = result.restored.metrics
    # 20*log10(255/25) = 20.17 dB; clipping at 0 and 1 makes it a little higher
    assert 20.0 < m["psnr_noisy"] < 21.0
    assert set(m) == {"psnr_noisy", "ssim_noisy", "psnr", "ssim"}
    assert abs(result.restored.sigma_estimate - 25) < 3
    assert result.captioner_version.startswith("attention@") and result.restored.denoiser_version.startswith("ffdnet@")
    assert all(w in {"a", "dog", "runs", "on", "the", "grass", "cat", "sits"} for w in result.caption.split())


def test_no_reference_gives_no_reference_scores(models) -> None:  # type: ignore[no-untyped-def]
    denoiser, captioner = models
    result = pipeline.process(png(smooth_image(64, 64, channels=1)), pipeline.Options(), LIMITS, denoiser, captioner)
    assert set(result.restored.metrics) == {"brisque_noisy", "brisque"}
    assert result.restored.denoised.pixels.shape == (64, 64, 1)


def test_reference_of_another_size_is_refused(models) -> None:  # type: ignore[no-untyped-def]
    denoiser, captioner = models
    with pytest.raises(ImageError, match="reference"):
        pipeline.process(png(smooth_image(64, 64)), pipeline.Options(), LIMITS, denoiser, captioner,
                         reference=png(smooth_image(32, 32)))


def test_explicit_sigma_overrides_the_estimate(models) -> None:  # type: ignore[no-untyped-def]
    denoiser, _ = models
    pic = pipeline.decode(png(smooth_image()), LIMITS)
    a = pipeline.restore(pic, pipeline.Options(denoise_sigma=0), denoiser)
    b = pipeline.restore(pic, pipeline.Options(denoise_sigma=50), denoiser)
    assert not np.allclose(a.denoised.pixels, b.denoised.pixels)


@pytest.mark.parametrize("sigma", [5, 15, 25, 50, 75])
def test_noise_estimate_within_tolerance(sigma: float) -> None:
    clean = smooth_image(256, 256).astype(np.float32) / 255
    noisy = clean + np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32) * sigma / 255
    estimate = quality.noise_level(np.clip(noisy, 0, 1)) * 255
    # clipping at 0/1 shrinks strong noise, so the tolerance grows with sigma
    assert abs(estimate - sigma) < 1.5 + 0.12 * sigma
