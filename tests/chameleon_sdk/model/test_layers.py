"""Building blocks: RMSNorm's fused fp32 path and its generic path compute the same thing."""

from __future__ import annotations

import pytest
import torch

from chameleon_sdk.model.layers import RMSNorm


def reference_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def test_fp32_matches_the_formula_in_value_and_gradient() -> None:
    norm = RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.weight.normal_()
    x = (torch.randn(3, 5, 16) * 4).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    upstream = torch.randn(3, 5, 16)
    out = norm(x)
    (out * upstream).sum().backward()
    weight_grad = norm.weight.grad
    norm.weight.grad = None
    expected = reference_rms_norm(x_ref, norm.weight, norm.eps)
    (expected * upstream).sum().backward()
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weight_grad, norm.weight.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_other_dtypes_normalise_in_fp32(dtype: torch.dtype) -> None:
    norm = RMSNorm(8, eps=1e-5)
    x = torch.randn(2, 8).to(dtype)
    torch.testing.assert_close(norm(x), reference_rms_norm(x, norm.weight, norm.eps))
