"""Caption decoder: a small Transformer decoder attending over the encoder's 7x7 feature grid.

Vaswani et al., "Attention Is All You Need", 2017, used as in the grid-feature captioners that followed
Xu et al., "Show, Attend and Tell", 2015 (attention over spatial CNN features).
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

    def start(self, memory: torch.Tensor) -> "DecodeCache":
        """Incremental decoding of one image: the memory's keys and values per layer, computed once."""
        d, cross = self.config.d_model, []
        for layer in self.decoder.layers:
            w, b = layer.multihead_attn.in_proj_weight, layer.multihead_attn.in_proj_bias
            cross.append((self._heads(F.linear(memory, w[d:2 * d], b[d:2 * d])),
                          self._heads(F.linear(memory, w[2 * d:], b[2 * d:]))))
        return DecodeCache(cross)

    def step(self, cache: "DecodeCache", last: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the next token (B, vocab) given each hypothesis' last token (B,); the cache keeps
        the keys and values of the earlier tokens, so a step costs one token, not the whole prefix."""
        d, t = self.config.d_model, cache.length
        x = self.embed(last)[:, None] + self.pos.weight[t]
        for i, layer in enumerate(self.decoder.layers):
            q, k, v = map(self._heads, F.linear(layer.norm1(x), layer.self_attn.in_proj_weight,
                                                layer.self_attn.in_proj_bias).chunk(3, dim=-1))
            if t:
                k, v = torch.cat([cache.keys[i], k], dim=2), torch.cat([cache.values[i], v], dim=2)
            cache.store(i, k, v)
            x = x + layer.self_attn.out_proj(self._merge(F.scaled_dot_product_attention(q, k, v)))
            w, b = layer.multihead_attn.in_proj_weight, layer.multihead_attn.in_proj_bias
            q = self._heads(F.linear(layer.norm2(x), w[:d], b[:d]))
            ck, cv = (c.expand(q.shape[0], -1, -1, -1) for c in cache.cross[i])
            x = x + layer.multihead_attn.out_proj(self._merge(F.scaled_dot_product_attention(q, ck, cv)))
            x = x + layer.linear2(layer.activation(layer.linear1(layer.norm3(x))))
        cache.length += 1
        return torch.log_softmax(self.out(self.norm(x))[:, 0], dim=-1)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        return x.view(n, t, self.config.heads, d // self.config.heads).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        n, h, t, hd = x.shape
        return x.transpose(1, 2).reshape(n, t, h * hd)


@dataclass
class DecodeCache:
    """Per layer: the memory's keys/values, and the keys/values of the tokens decoded so far (one row a beam)."""
    cross: list[tuple[torch.Tensor, torch.Tensor]]
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    length: int = 0

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        if layer == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        else:
            self.keys[layer], self.values[layer] = k, v

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep the hypotheses the beam chose, in its order."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]
