"""``onednn-packed``: bf16 linear weights reordered once into oneDNN's layout, for decoding on a CPU.

torch computes a bf16 ``F.linear`` on a CPU with oneDNN, which first reorders the plain ``[out,
in]`` weight into its blocked layout, on every call: each weight is read, written and read again.
This plugin reorders every bf16 ``nn.Linear`` weight once, with the ops inductor's freezing pass
uses for compiled graphs (``mkldnn._reorder_linear_weight`` and ``mkldnn._linear_pointwise``), so
a step reads each weight once. The logits are those of the plain bf16 model up to summation order.

The packed weights are for inference: they take no gradients, cannot be saved or converted
(``to()`` another dtype or device is a :class:`ConfigError`), and LoRA adapters must be merged
before. Under ``compile=True`` the packed matmul is one opaque op
(:func:`packed_linear`) that inductor calls as it is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from chameleon_sdk import BackendUnavailableError, ConfigError

__all__ = ["OneDNNPacked", "PackedLinear", "packed_linear"]


@torch.library.custom_op("chameleon_quantization::onednn_packed_linear", mutates_args=())
def packed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T + bias`` for a ``weight`` packed by ``mkldnn._reorder_linear_weight``.

    An op of its own so that ``torch.compile`` calls it as it is: inductor lowers the mkldnn op only
    for the weights its own freezing pass packed, and fails on others."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")  # type: ignore[no-any-return]


@packed_linear.register_fake
def _packed_linear_shape(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _available() -> bool:
    ops = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and all(
        hasattr(ops, name) for name in ("_reorder_linear_weight", "_linear_pointwise")
    )


class PackedLinear(nn.Module):
    """An ``nn.Linear`` over its weight packed for oneDNN (a buffer in oneDNN's opaque layout)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None))
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return packed_linear(x, self.weight, self.bias)
        # eagerly the op itself: through the custom op's Python dispatch, bf16 decoding of the bench
        # config ran at 104 tokens/s instead of 125 (57 linears a step)
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")  # type: ignore[no-any-return]

    def _apply(self, fn: Any, recurse: bool = True) -> PackedLinear:
        # what .to(), .float(), .cuda() run on every tensor: torch's own error for a packed weight
        # names an internal op and a backend, not the layer
        try:
            return super()._apply(fn, recurse)  # type: ignore[no-any-return]
        except (NotImplementedError, RuntimeError) as exc:
            raise ConfigError(
                "onednn-packed weights stay as packed (bf16, CPU), and layers before this one may be converted "
                f"already: load the model again in the dtype and on the device you want ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0]})"
            ) from None

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed for oneDNN"


class OneDNNPacked:
    """Every bf16 ``nn.Linear`` of a CPU model replaced by a :class:`PackedLinear`."""

    def quantize(self, model: nn.Module) -> nn.Module:
        if not _available():
            raise BackendUnavailableError(
                "quantization 'onednn-packed' needs a torch build with oneDNN (mkldnn) and its packed linear ops"
            )
        linears = [
            (parent, name, f"{path}.{name}".lstrip("."), child)
            for path, parent in model.named_modules()
            for name, child in parent.named_children()
            if isinstance(child, nn.Linear)
        ]
        for _, _, path, linear in linears:  # every weight checked before any is replaced
            weight = linear.weight
            if weight.dtype != torch.bfloat16 or weight.device.type != "cpu":
                raise ConfigError(
                    f"quantization 'onednn-packed' packs bf16 weights on the CPU, but {path} holds "
                    f"{str(weight.dtype).removeprefix('torch.')} on {weight.device}: load the model with "
                    "dtype=torch.bfloat16 on the CPU"
                )
        for parent, name, _, linear in linears:
            setattr(parent, name, PackedLinear(linear))
        return model
