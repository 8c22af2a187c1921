"""FFDNet-style blind denoiser.

Zhang, Zuo, Zhang, "FFDNet: Toward a Fast and Flexible Solution for CNN-Based Image Denoising", IEEE TIP 2018.
The image is pixel-unshuffled 2x2, a noise-level map is appended, and a plain conv/BN/ReLU stack works at half
resolution. Unlike the paper the body predicts the noise (residual learning, as in DnCNN), which trains faster.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class FFDNetConfig:
    channels: int = 3  # 1 for gray, 3 for color
    features: int = 64
    depth: int = 12


class FFDNet(nn.Module):
    def __init__(self, config: FFDNetConfig) -> None:
        super().__init__()
        self.config = config
        c4 = config.channels * 4
        layers: list[nn.Module] = [nn.Conv2d(c4 + 1, config.features, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(config.depth - 2):
            layers += [
                nn.Conv2d(config.features, config.features, 3, padding=1, bias=False),
                nn.BatchNorm2d(config.features),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(config.features, c4, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) noisy image in [0, 1]; sigma: (N,) noise standard deviation on the same scale."""
        assert x.shape[1] == self.config.channels, f"expected {self.config.channels} channels, got {x.shape[1]}"
        assert sigma.shape == (x.shape[0],), f"sigma must be (N,), got {tuple(sigma.shape)}"
        h, w = x.shape[-2:]
        padded = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
        down = F.pixel_unshuffle(padded, 2)  # (N, 4C, H/2, W/2)
        noise_map = sigma.view(-1, 1, 1, 1).to(down.dtype).expand(-1, 1, *down.shape[-2:])
        noise = F.pixel_shuffle(self.body(torch.cat([down, noise_map], dim=1)), 2)
        return (padded - noise)[..., :h, :w]
