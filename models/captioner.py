"""Caption decoder: a small Transformer decoder attending over the encoder's 7x7 feature grid.

Vaswani et al., "Attention Is All You Need", 2017, used as in the grid-feature captioners that followed
Xu et al., "Show, Attend and Tell", 2015 (attention over spatial CNN features). The pre-norm decoder block is
written once: training runs it over whole captions, decoding one token at a time with cached keys and values.
"""
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
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


class Attention(nn.Module):
    """Multi-head attention with a packed input projection (the parameter names of nn.MultiheadAttention)."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d))
        self.out_proj = nn.Linear(d, d)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def project(self, x: torch.Tensor, part: int) -> torch.Tensor:
        """Part 0/1/2 (query/key/value) of (N, T, d) split into heads: (N, heads, T, d / heads)."""
        d = x.shape[-1]
        y = F.linear(x, self.in_proj_weight[part * d:(part + 1) * d], self.in_proj_bias[part * d:(part + 1) * d])
        n, t, _ = y.shape
        return y.view(n, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
        """q, k, v already projected; k and v broadcast over the batch when they have one row."""
        k, v = k.expand(q.shape[0], -1, -1, -1), v.expand(q.shape[0], -1, -1, -1)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=causal)  # (N, heads, T, d / heads)
        n, h, t, hd = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(n, t, h * hd))


class Block(nn.Module):
    """Pre-norm decoder block: causal self-attention, attention over the image grid, feed-forward."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        d = config.d_model
        self.self_attn = Attention(d, config.heads, config.dropout)
        self.multihead_attn = Attention(d, config.heads, config.dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.linear1, self.linear2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.drop = nn.Dropout(config.dropout)

    def grid_keys(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.multihead_attn.project(memory, 1), self.multihead_attn.project(memory, 2)

    def forward(self, x: torch.Tensor, grid: tuple[torch.Tensor, torch.Tensor],
                past: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x: (N, T, d) new tokens; grid: the memory's keys and values; past: keys and values of the tokens
        before x. Without past, T tokens attend causally among themselves; with it, one new token attends to all.
        Returns the output and the keys and values up to and including x (the cache of the next step)."""
        assert past is None or x.shape[1] == 1, "with a cache, one token at a time"
        h = self.norm1(x)
        q, k, v = (self.self_attn.project(h, i) for i in range(3))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        x = x + self.drop(self.self_attn(q, k, v, causal=past is None))
        x = x + self.drop(self.multihead_attn(self.multihead_attn.project(self.norm2(x), 0), *grid, causal=False))
        x = x + self.drop(self.linear2(self.drop(F.relu(self.linear1(self.norm3(x))))))
        return x, (k, v)


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
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, config.vocab_size, bias=False)
        self.out.weight = self.embed.weight  # tied input/output embeddings
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def memory(self, features: torch.Tensor) -> torch.Tensor:
        """features: (N, grid, feature_dim) from the encoder -> (N, grid, d_model)."""
        return self.project(features) + self.grid_pos

    def forward(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """memory: (N, grid, d); tokens: (N, T) starting with <bos>. Returns logits (N, T, vocab)."""
        t = tokens.shape[1]
        assert t <= self.config.max_len, f"at most {self.config.max_len} tokens, got {t}"
        x = self.embed(tokens) + self.pos.weight[:t]
        for block in self.blocks:
            x, _ = block(x, block.grid_keys(memory))
        return self.out(self.norm(x))

    def start(self, memory: torch.Tensor) -> "DecodeCache":
        """Incremental decoding: the memory's keys and values per block, computed once (one row per image, or one
        row shared by all hypotheses of a beam over one image)."""
        return DecodeCache([block.grid_keys(memory) for block in self.blocks])

    def step(self, cache: "DecodeCache", last: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the next token (B, vocab) given each hypothesis' last token (B,); the cache keeps
        the keys and values of the earlier tokens, so a step costs one token, not the whole prefix."""
        assert cache.length < self.config.max_len, f"at most {self.config.max_len} tokens"
        x = self.embed(last)[:, None] + self.pos.weight[cache.length]  # (B, 1, d)
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cache.grid[i], cache.past[i] if cache.length else None)
            cache.store(i, kv)
        cache.length += 1
        return torch.log_softmax(self.out(self.norm(x))[:, 0], dim=-1)


@dataclass
class DecodeCache:
    """Per block: the memory's keys/values, and the keys/values of the tokens decoded so far (one row a beam)."""
    grid: list[tuple[torch.Tensor, torch.Tensor]]
    past: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    length: int = 0

    def store(self, block: int, kv: tuple[torch.Tensor, torch.Tensor]) -> None:
        if block == len(self.past):
            self.past.append(kv)
        else:
            self.past[block] = kv

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep the hypotheses the beam chose, in its order, and each one's image grid when there are several."""
        self.past = [(k[rows], v[rows]) for k, v in self.past]
        if self.grid[0][0].shape[0] > 1:
            self.grid = [(k[rows], v[rows]) for k, v in self.grid]
