"""The synthetic camera noise: signal-dependent, correlated between neighbours, JPEG'd, mixed with Gaussian."""
from dataclasses import replace

import torch

from models.noise import Ranges, camera_noise, degrade, level_map


def flat(value: float, n: int = 64, size: int = 48) -> torch.Tensor:
    return torch.full((n, 3, size, size), value)


def test_camera_noise_grows_with_the_signal_in_linear_light() -> None:
    gen = torch.Generator().manual_seed(0)
    ranges = Ranges(shot=(5e-3, 5e-3), read_spread=0.0, ccm_mix=(0.0, 0.0), gamma=(1.0, 1.0))
    dark, bright = (camera_noise(flat(v), ranges, gen) - v for v in (0.2, 0.8))
    assert bright.std() > 1.5 * dark.std()  # shot noise: variance grows with the signal


def test_camera_noise_is_correlated_between_neighbours_and_gaussian_is_not() -> None:
    gen = torch.Generator().manual_seed(1)
    ranges = Ranges(shot=(2e-3, 2e-3), gamma=(1.0, 1.0))
    camera = camera_noise(flat(0.5), ranges, gen) - 0.5
    white = torch.randn(camera.shape, generator=gen)

    def neighbour_correlation(noise: torch.Tensor) -> float:
        a, b = noise[..., :, :-1].flatten(), noise[..., :, 1:].flatten()
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    assert neighbour_correlation(camera) > 0.2 and abs(neighbour_correlation(white)) < 0.05


def test_degrade_mixes_gaussian_and_camera_noise_and_keeps_shape() -> None:
    gen = torch.Generator().manual_seed(2)
    clean = torch.rand(200, 1, 16, 16) * 0.6 + 0.2
    noisy = degrade(clean, gen, Ranges(gaussian_share=0.5))
    assert noisy.shape == clean.shape
    outside = (noisy != noisy.clamp(0, 1)).flatten(1).any(1)  # only Gaussian samples are not clipped
    assert 50 < int(outside.sum()) < 150


def test_jpeg_share_zero_and_one_differ() -> None:
    clean = torch.rand(8, 3, 32, 32)
    never = degrade(clean, torch.Generator().manual_seed(3), Ranges(gaussian_share=0.0, jpeg_share=0.0))
    always = degrade(clean, torch.Generator().manual_seed(3), Ranges(gaussian_share=0.0, jpeg_share=1.0))
    assert not torch.allclose(never, always)
    assert torch.allclose(always * 255, (always * 255).round(), atol=1e-3)  # decoded JPEG: 8-bit values


def test_level_map_reads_the_sigma_of_white_noise() -> None:
    clean = torch.rand(4, 3, 64, 64)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(4))
    levels = level_map(noisy, clean)
    assert levels.shape == (4, 3, 32, 32) and abs(float(levels.mean()) - 0.1) < 0.01


def test_smeared_noise_keeps_its_level_and_loses_high_frequencies() -> None:
    gen = torch.Generator().manual_seed(5)
    base = Ranges(shot=(2e-3, 2e-3), read_spread=0.0, gamma=(1.0, 1.0), ccm_mix=(0.0, 0.0), channel_jitter=(1.0, 1.0),
                  red_gain=(1.0, 1.0), blue_gain=(1.0, 1.0))
    sharp = camera_noise(flat(0.5), replace(base, smear_share=0.0), gen) - 0.5
    smeared = camera_noise(flat(0.5), replace(base, smear_share=1.0, smear_sigma=(1.5, 1.5)), gen) - 0.5
    assert 0.8 < float(smeared.std() / sharp.std()) < 1.25  # the level is kept
    def roughness(noise: torch.Tensor) -> float:
        return float((noise[..., 1:] - noise[..., :-1]).std() / noise.std())
    assert roughness(smeared) < 0.6 * roughness(sharp)  # neighbours alike: the high frequencies are gone
