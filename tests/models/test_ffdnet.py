import numpy as np
import pytest
import torch

from models.tiling import denoise_tiled
from tests.tiny import tiny_denoiser


@pytest.mark.parametrize("shape", [(1, 3, 33, 47), (2, 1, 16, 15), (1, 3, 1, 1)])
def test_any_shape_in_same_shape_out(shape: tuple[int, ...]) -> None:
    net = tiny_denoiser(shape[1])
    with torch.inference_mode():
        out = net(torch.rand(shape), torch.full((shape[0],), 0.1))
    assert out.shape == shape


def test_tiled_equals_untiled_on_512() -> None:
    torch.manual_seed(1)
    net = tiny_denoiser(3)
    x = torch.rand(1, 3, 512, 512)
    whole = denoise_tiled(net, x, 0.1, tile=1024, overlap=32)
    tiled = denoise_tiled(net, x, 0.1, tile=160, overlap=32)
    mse_whole = float(((whole.clamp(0, 1) - x) ** 2).mean())
    mse_tiled = float(((tiled.clamp(0, 1) - x) ** 2).mean())
    assert abs(10 * np.log10(mse_whole / mse_tiled)) < 0.05
    assert torch.allclose(whole, tiled, atol=1e-4)


def test_sigma_changes_the_output() -> None:
    net = tiny_denoiser(3)
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        assert not torch.allclose(net(x, torch.tensor([0.0])), net(x, torch.tensor([0.3])))
