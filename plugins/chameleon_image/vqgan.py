"""The VQ-VAE network: encoder, vector quantizer, decoder, ``quant_conv`` and ``post_quant_conv``.

The architecture is the Make-A-Scene / taming-transformers VQGAN that Chameleon uses. Module names
follow that layout on purpose (``encoder.down.{i}.block.{j}.conv1``, ``decoder.up.{i}.upsample.conv``,
``quantize.embedding.weight``, ...), so released checkpoints load by stripping a key prefix.

Shapes, for a ``resolution`` R and ``L = len(channel_multipliers)`` levels: the encoder halves the
side ``L - 1`` times, so the latent grid is ``R / 2**(L-1)`` on each side (512 px, 5 levels: 32 x 32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from chameleon_image.options import ImageTokenizerOptions

GROUPS = 32


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=GROUPS, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm -> swish -> conv -> norm -> swish -> dropout -> conv, plus a (1x1-projected) skip."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions of a feature map (1x1-conv projections)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (proj(n).flatten(2).transpose(1, 2) for proj in (self.q, self.k, self.v))  # [B, HW, C]
        out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Stride-2 3x3 conv with the reference's asymmetric padding (one pixel right and bottom)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: residual blocks, optional attention after each, optional resampling."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()

    def run(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class _Middle(nn.Module):
    def __init__(self, channels: int, dropout: float, attention: bool) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels) if attention else nn.Identity()
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """Pixels ``[B, 3, R, R]`` -> latents ``[B, latent_channels, r, r]``."""

    def __init__(self, arch: ImageTokenizerOptions) -> None:
        super().__init__()
        mults = arch.channel_multipliers
        self.conv_in = nn.Conv2d(arch.in_channels, arch.base_channels, kernel_size=3, padding=1)
        self.down = nn.ModuleList()
        block_in, res = arch.base_channels, arch.resolution
        for level, mult in enumerate(mults):
            stage = _Level()
            block_out = arch.base_channels * mult
            for _ in range(arch.num_res_blocks):
                stage.block.append(ResnetBlock(block_in, block_out, arch.dropout))
                block_in = block_out
                if res in arch.attn_resolutions:
                    stage.attn.append(AttnBlock(block_in))
            if level != len(mults) - 1:
                stage.downsample = Downsample(block_in)
                res //= 2
            self.down.append(stage)
        self.mid = _Middle(block_in, arch.dropout, arch.mid_attention)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, arch.latent_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            h = stage.run(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latents ``[B, latent_channels, r, r]`` -> pixels ``[B, 3, R, R]`` (unclamped).

    Mirrors the encoder with one more residual block per level, as the reference does. ``up`` is
    indexed by level like the encoder's ``down`` (``up[0]`` is the full-resolution level) and runs
    from the coarsest level to the finest.
    """

    def __init__(self, arch: ImageTokenizerOptions) -> None:
        super().__init__()
        mults = arch.channel_multipliers
        block_in = arch.base_channels * mults[-1]
        res = arch.latent_size
        self.conv_in = nn.Conv2d(arch.latent_channels, block_in, kernel_size=3, padding=1)
        self.mid = _Middle(block_in, arch.dropout, arch.mid_attention)
        levels: list[_Level] = []
        for level in reversed(range(len(mults))):
            stage = _Level()
            block_out = arch.base_channels * mults[level]
            for _ in range(arch.num_res_blocks + 1):
                stage.block.append(ResnetBlock(block_in, block_out, arch.dropout))
                block_in = block_out
                if res in arch.attn_resolutions:
                    stage.attn.append(AttnBlock(block_in))
            if level != 0:
                stage.upsample = Upsample(block_in)
                res *= 2
            levels.insert(0, stage)
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, arch.in_channels, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            h = stage.run(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """A codebook of ``codebook_size`` vectors of ``embed_dim``; nearest-entry lookup.

    ``metric="l2"``: nearest by Euclidean distance (the reference, and what released weights need).
    ``metric="cosine"``: latents and entries are L2-normalised first, so lookup is by cosine
    similarity and the quantized vector is the normalised entry; small codebooks train better with it.
    """

    #: rows per distance matrix chunk, bounding memory at ``chunk x codebook_size`` floats
    CHUNK = 4096

    def __init__(self, codebook_size: int, embed_dim: int, metric: str) -> None:
        super().__init__()
        self.metric = metric
        self.embedding = nn.Embedding(codebook_size, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        if metric == "cosine":
            nn.init.normal_(self.embedding.weight)

    def codebook(self) -> torch.Tensor:
        """The entries as looked up (normalised for the cosine metric)."""
        weight = self.embedding.weight
        return F.normalize(weight, dim=1) if self.metric == "cosine" else weight

    def prepare(self, z: torch.Tensor) -> torch.Tensor:
        """Latent vectors ``[N, D]`` as compared with the codebook."""
        return F.normalize(z, dim=1) if self.metric == "cosine" else z

    @torch.no_grad()
    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Codes ``[N]`` of the nearest entries to the (prepared) vectors ``z [N, D]``."""
        book = self.codebook().float()
        z = z.float()
        out = []
        for part in z.split(self.CHUNK):
            if self.metric == "cosine":
                out.append((part @ book.t()).argmax(dim=1))
            else:
                # |z - e|^2 = |z|^2 + |e|^2 - 2 z.e, in the reference's order of terms
                dist = part.pow(2).sum(1, keepdim=True) + book.pow(2).sum(1) - 2 * (part @ book.t())
                out.append(dist.argmin(dim=1))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=z.device)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Entries ``[..., D]`` for codes of any shape."""
        return F.embedding(codes, self.codebook())


class VQGAN(nn.Module):
    """The whole network. ``decoder`` is absent when the options say ``decoder=False``."""

    def __init__(self, options: ImageTokenizerOptions) -> None:
        super().__init__()
        self.options = options
        self.encoder = Encoder(options)
        self.quant_conv = nn.Conv2d(options.latent_channels, options.embed_dim, kernel_size=1)
        self.quantize = VectorQuantizer(options.codebook_size, options.embed_dim, options.codebook_metric)
        self.post_quant_conv = nn.Conv2d(options.embed_dim, options.latent_channels, kernel_size=1)
        self.decoder = Decoder(options) if options.decoder else None

    def latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pre-quantization latents ``[B, embed_dim, r, r]`` for pixels in ``[-1, 1]``."""
        return self.quant_conv(self.encoder(pixels))

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, r*r]`` (row-major) for pixels ``[B, 3, R, R]`` in ``[-1, 1]``."""
        z = self.latents(pixels)
        b, d, h, w = z.shape
        flat = self.quantize.prepare(z.permute(0, 2, 3, 1).reshape(-1, d))
        return self.quantize.nearest(flat).view(b, h * w)

    def decode_latents(self, quantized: torch.Tensor) -> torch.Tensor:
        """Pixels (unclamped) for quantized latents ``[B, embed_dim, r, r]``."""
        if self.decoder is None:
            raise RuntimeError("this VQGAN has no decoder")
        return self.decoder(self.post_quant_conv(quantized))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Pixels in ``[-1, 1]`` ``[B, 3, R, R]`` for codes ``[B, r*r]``."""
        side = self.options.latent_size
        quantized = self.quantize.lookup(codes).view(codes.shape[0], side, side, -1).permute(0, 3, 1, 2)
        return self.decode_latents(quantized).clamp(-1.0, 1.0)
