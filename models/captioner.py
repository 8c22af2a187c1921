"""Caption decoder: a small Transformer decoder attending over the encoder's 7x7 feature grid.

Vaswani et al., "Attention Is All You Need", 2017, used as in the grid-feature captioners that followed
Xu et al., "Show, Attend and Tell", 2015 (attention over spatial CNN features).
"""
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class CaptionerConfig:
    vocab_size: int
    feature_dim: int = 1280
    grid: int = 49
    d_model: int = 384
    heads: int = 6
    layers: int = 3
    max_len: int = 22  # <bos> + words + <eos>
    dropout: float = 0.3


class Captioner(nn.Module):
    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.project = nn.Sequential(nn.LayerNorm(config.feature_dim), nn.Linear(config.feature_dim, d),
                                     nn.Dropout(config.dropout))
        self.grid_pos = nn.Parameter(torch.zeros(1, config.grid, d))
        self.embed = nn.Embedding(config.vocab_size, d)
        self.pos = nn.Embedding(config.max_len, d)
        layer = nn.TransformerDecoderLayer(d, config.heads, 4 * d, config.dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, config.layers)
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, config.vocab_size, bias=False)
        self.out.weight = self.embed.weight  # tied input/output embeddings
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.register_buffer("causal", torch.triu(torch.full((config.max_len, config.max_len), float("-inf")), 1))

    def memory(self, features: torch.Tensor) -> torch.Tensor:
        """features: (N, grid, feature_dim) from the encoder -> (N, grid, d_model)."""
        return self.project(features) + self.grid_pos

    def forward(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """memory: (N, grid, d); tokens: (N, T) starting with <bos>. Returns logits (N, T, vocab)."""
        t = tokens.shape[1]
        assert t <= self.config.max_len, f"at most {self.config.max_len} tokens, got {t}"
        x = self.embed(tokens) + self.pos.weight[:t]
        x = self.decoder(x, memory, tgt_mask=self.causal[:t, :t], tgt_is_causal=True)
        return self.out(self.norm(x))

    def step(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the next token after each prefix: (N, vocab)."""
        return torch.log_softmax(self.forward(memory, tokens)[:, -1], dim=-1)
