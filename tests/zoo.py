"""Tiny models with the couplings real networks have; every method is run on every one."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNNBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class SmallCNNBN(nn.Module):
    """One conv + BatchNorm + a linear head, for tests that need exact hand-countable shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1))
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = h + self.branch(h)
        return self.head(h.mean(dim=(2, 3)))


class GroupedConcat(nn.Module):
    """Grouped and depthwise convs, and a concatenation of two branches."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pointwise = nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.cat([self.grouped(h), self.depthwise(h)], dim=1)
        return self.head(torch.relu(self.pointwise(h)).mean(dim=(2, 3)))


class AttentionClassifier(nn.Module):
    """A transformer encoder block over the 8 rows of an 8×8 image."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.block = nn.TransformerEncoderLayer(16, nhead=4, dim_feedforward=32, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(self.embed(x.reshape(x.shape[0], 8, 8)))
        return self.head(h.mean(dim=1))


class TiedLM(nn.Module):
    """A GPT-style block with an embedding tied to the output head."""

    def __init__(self, vocab: int = 32, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        h = h + self.mlp(self.norm(h))
        return self.head(h)


class SplitNorms(nn.Module):
    """chunk into two branches, GroupNorm on one, a depthwise conv with channel multiplier 2,
    a channel-scale parameter, and a flatten into a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 8)
        self.dw = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 24).reshape(1, 24, 1, 1))
        self.mix = nn.Conv2d(24, 8, 1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.relu(self.stem(x)).chunk(2, dim=1)
        h = torch.cat([torch.relu(self.gn(a)), self.dw(b)], dim=1) * self.scale
        h = torch.nn.functional.avg_pool2d(torch.relu(self.bn(self.mix(h))), 2)
        return self.head(h.flatten(1))


class HeadAttention(nn.Module):
    """Hand-written grouped-query attention (4 query heads, 2 key/value heads) with RMSNorm,
    a SwiGLU MLP and a tied embedding/head: the couplings of a LLaMA block."""

    def __init__(self, vocab: int = 32, dim: int = 32, heads: int = 4, kv_heads: int = 2):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.embed = nn.Embedding(vocab, dim)
        self.norm1 = nn.RMSNorm(dim)
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.v = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)
        self.norm2 = nn.RMSNorm(dim)
        self.gate = nn.Linear(dim, 2 * dim, bias=False)
        self.up = nn.Linear(dim, 2 * dim, bias=False)
        self.down = nn.Linear(2 * dim, dim, bias=False)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        b, t, _ = h.shape
        x = self.norm1(h)
        q = self.q(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.o(a.transpose(1, 2).reshape(b, t, -1))
        x = self.norm2(h)
        h = h + self.down(torch.nn.functional.silu(self.gate(x)) * self.up(x))
        return self.out(h)


def image_batches(
    n: int = 64, batch: int = 16, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random [B,1,8,8] images whose label is a fixed linear function of the pixels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    w = torch.randn(64, 10, generator=torch.Generator().manual_seed(123))
    y = (x.flatten(1) @ w).argmax(1)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def token_batches(
    n: int = 32, batch: int = 8, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random token windows [B, 12]; labels are the next tokens."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, 32, (n, 13), generator=g)
    return [(t[i : i + batch, :-1], t[i : i + batch, 1:]) for i in range(0, n, batch)]


ZOO: dict[str, tuple[Callable[[], nn.Module], Callable[[], list]]] = {
    "mlp": (MLP, image_batches),
    "cnn-bn": (CNNBN, image_batches),
    "residual": (Residual, image_batches),
    "grouped-concat": (GroupedConcat, image_batches),
    "attention": (AttentionClassifier, image_batches),
    "tied-lm": (TiedLM, token_batches),
}


# Extra couplings for the structured-pruning suite (the unstructured suite runs on ZOO).
COUPLINGS: dict[str, tuple[Callable[[], nn.Module], Callable[[], list]]] = {
    "split-norms": (SplitNorms, image_batches),
    "head-attention": (HeadAttention, token_batches),
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, list]:
    torch.manual_seed(seed)
    factory, batches = {**ZOO, **COUPLINGS}[name]
    return factory(), batches()
