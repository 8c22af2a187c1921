"""FFDNet-style blind denoiser with a residual-block body.

Zhang, Zuo, Zhang, "FFDNet: Toward a Fast and Flexible Solution for CNN-Based Image Denoising", IEEE TIP 2018:
the image is pixel-unshuffled 2x2 and a noise-level map is appended, so the network works at half resolution
and takes the noise level as an input. The body uses residual blocks without batch norm, as in DRUNet (Zhang et
al., "Plug-and-Play Image Restoration with Deep Denoiser Prior", TPAMI 2021), and predicts the noise (residual
learning, as in DnCNN): on this CPU the paper's plain conv/BN stack stayed at the identity for hundreds of steps
where this body reached 27 dB (sigma 25) in 250 steps.

The noise level is a map, per channel at half resolution, so real camera noise (brighter where the signal is,
different per channel) can be described. Blind, the map comes from a small estimation subnetwork as in CBDNet
(Guo et al., "Toward Convolutional Blind Denoising of Real Photographs", CVPR 2019), trained with its asymmetric
loss; a known level is the same map filled with one value.
"""
from dataclasses import dataclass
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class FFDNetConfig:
    channels: int = 3  # 1 for gray, 3 for color
    features: int = 64
    blocks: int = 8  # each two 3x3 convs; the net has 2 * blocks + 2 convs in all
    estimator_features: int = 32  # the estimation subnetwork: 5 convs at half resolution


class ResBlock(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def _convs(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for cin, cout in pairwise(sizes):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _down(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 4C, ceil(H/2), ceil(W/2)), odd sides padded by replication."""
    h, w = x.shape[-2:]
    return F.pixel_unshuffle(F.pad(x, (0, w % 2, 0, h % 2), mode="replicate"), 2)


class FFDNet(nn.Module):
    def __init__(self, config: FFDNetConfig) -> None:
        super().__init__()
        self.config = config
        c, c4, e = config.channels, config.channels * 4, config.estimator_features
        self.estimator = _convs([c4, e, e, e, e, c])
        self.head = nn.Conv2d(c4 + c, config.features, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(config.features) for _ in range(config.blocks)])
        self.tail = nn.Conv2d(config.features, c4, 3, padding=1)

    def estimate(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) noisy image in [0, 1]. Returns the noise std map (N, C, ceil(H/2), ceil(W/2)), >= 0."""
        return F.softplus(self.estimator(_down(x)))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) noisy image in [0, 1]; noise: its standard deviation on the same scale, either a level
        per image (N,) or a map (N, C, ceil(H/2), ceil(W/2)) such as `estimate(x)` gives."""
        assert x.shape[1] == self.config.channels, f"expected {self.config.channels} channels, got {x.shape[1]}"
        h, w = x.shape[-2:]
        down = _down(x)  # (N, 4C, H/2, W/2)
        if noise.dim() == 1:
            assert noise.shape == (x.shape[0],), f"a noise level per image must be (N,), got {tuple(noise.shape)}"
            noise = noise.view(-1, 1, 1, 1).expand(-1, x.shape[1], *down.shape[-2:])
        assert noise.shape[-2:] == down.shape[-2:], f"noise map {tuple(noise.shape)} for input {tuple(x.shape)}"
        residual = F.pixel_shuffle(self.tail(self.body(self.head(torch.cat([down, noise.to(down.dtype)], 1)))), 2)
        return (F.pixel_shuffle(down, 2) - residual)[..., :h, :w]
