"""The audio codec: band-limit and downsample with a DCT, then mu-law quantise each sample.

Encoding a clip of ``N`` samples (16 kHz) with downsampling factor ``d``:

1. **Downsample** to ``M = ceil(N / d)`` samples: mirror the clip's end up to ``M * d`` samples,
   keep the first ``M`` coefficients of its orthonormal DCT-II (scaled by ``sqrt(1 / d)``) and
   invert a length-``M`` DCT. This is a brick-wall low-pass at the new Nyquist frequency: nothing
   above it aliases, and the even-symmetric extension the DCT implies has no jump at the clip's
   ends (a plain FFT would see one and ring).
2. **Mu-law** compress every sample to ``2 ** bits`` levels (``mu = 2 ** bits - 1``): the steps are
   fine near zero and coarse near full scale, so quiet and loud signals get about the same
   signal-to-noise ratio (about 38 dB for 8 bits).

Decoding inverts both: mu-law expand, then zero-pad the DCT back to ``M * d`` samples. Because the
upsampler is the exact right inverse of the downsampler, ``encode(decode(codes)) == codes``: a
decoded clip encodes to the codes it came from, so ``tokenize(detokenize(ids)) == ids``.

All maths is in float64 torch; each step is a transform of the whole clip, never a per-sample loop.
"""

from __future__ import annotations

import math

import torch

__all__ = ["dct", "downsample", "idct", "mulaw_decode", "mulaw_encode", "resample", "upsample"]


def dct(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II along the last dimension, through one FFT of the even extension."""
    n = x.shape[-1]
    if n == 0:
        return x.clone()
    spectrum = torch.fft.fft(torch.cat([x, x.flip(-1)], dim=-1))[..., :n]
    k = torch.arange(n, dtype=x.dtype, device=x.device)
    half_sample = torch.exp(-1j * math.pi * k / (2 * n))
    coefficients = 0.5 * (spectrum * half_sample).real
    scale = torch.full((n,), math.sqrt(2.0 / n), dtype=x.dtype, device=x.device)
    scale[0] = math.sqrt(1.0 / n)
    return coefficients * scale


def idct(coefficients: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct` (an orthonormal DCT-III), through one inverse real FFT."""
    n = coefficients.shape[-1]
    if n == 0:
        return coefficients.clone()
    k = torch.arange(n, dtype=coefficients.dtype, device=coefficients.device)
    scale = torch.full((n,), math.sqrt(2.0 / n), dtype=coefficients.dtype, device=coefficients.device)
    scale[0] = 2.0 * math.sqrt(1.0 / n)  # irfft halves every bin but the first; double it back
    weighted = coefficients * scale * torch.exp(1j * math.pi * k / (2 * n))
    padded = torch.cat([weighted, weighted.new_zeros(*weighted.shape[:-1], 1)], dim=-1)
    return n * torch.fft.irfft(padded, n=2 * n)[..., :n]


def resample(x: torch.Tensor, length: int) -> torch.Tensor:
    """``x`` band-limited and resampled to ``length`` samples over the same time span.

    Shorter: the DCT is truncated (a brick-wall low-pass); longer: it is zero-padded (band-limited
    interpolation). ``resample(resample(y, n), len(y)) == y`` whenever ``n >= len(y)``.
    """
    n = x.shape[-1]
    if length == n:
        return x.clone()
    if n == 0 or length == 0:
        return x.new_zeros(*x.shape[:-1], length)
    coefficients = dct(x)
    kept = min(n, length)
    out = coefficients.new_zeros(*coefficients.shape[:-1], length)
    out[..., :kept] = coefficients[..., :kept] * math.sqrt(length / n)
    return idct(out)


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``ceil(len(x) / factor)`` samples: ``x`` low-passed at the new Nyquist and decimated.

    A clip whose length is not a multiple of ``factor`` is first extended by mirroring its end (the
    extension the DCT implies anyway), so the time grid is kept: sample ``m`` of the result sits at
    input samples ``m * factor ... (m + 1) * factor - 1`` and no pitch is shifted.
    """
    n = x.shape[-1]
    padded = -(-n // factor) * factor
    if padded != n:
        index = torch.arange(padded, device=x.device) % (2 * n)
        x = x[..., torch.where(index < n, index, 2 * n - 1 - index)]
    return resample(x, padded // factor)


def upsample(y: torch.Tensor, factor: int) -> torch.Tensor:
    """``len(y) * factor`` samples: band-limited interpolation; ``downsample(upsample(y, f), f) == y``."""
    return resample(y, y.shape[-1] * factor)


def mulaw_encode(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Codes in ``[0, levels)`` for samples in ``[-1, 1]`` (values outside are clipped)."""
    mu = levels - 1
    x = x.clamp(-1.0, 1.0)
    compressed = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    return torch.round((compressed + 1.0) / 2.0 * mu).long()


def mulaw_decode(codes: torch.Tensor, levels: int) -> torch.Tensor:
    """Samples in ``[-1, 1]`` (float64) for codes in ``[0, levels)``: the centre of each code's bin."""
    mu = levels - 1
    compressed = codes.double() / mu * 2.0 - 1.0
    expanded = torch.sign(compressed) * torch.expm1(compressed.abs() * math.log1p(mu)) / mu
    return expanded.clamp(-1.0, 1.0)  # full-scale codes can round to 1 + 2e-16
