"""``onednn-packed``: bf16 linear weights reordered once into oneDNN's layout, for decoding on a CPU.

torch computes a bf16 ``F.linear`` on a CPU with oneDNN, which first reorders the plain ``[out,
in]`` weight into its blocked layout, on every call: each weight is read, written and read again.
This plugin reorders every bf16 ``nn.Linear`` weight once, with the ops inductor's freezing pass
uses for compiled graphs (``mkldnn._reorder_linear_weight`` and ``mkldnn._linear_pointwise``), so
a step reads each weight once. The logits are those of the plain bf16 model up to summation order.

The packed weights are for inference: they take no gradients, cannot be saved or converted
(``to()`` another dtype or device is a :class:`ConfigError`, raised before any layer of the model
is converted), and LoRA adapters must be merged before. Under ``compile=True`` the packed matmul is one opaque op
(``chameleon_quantization::onednn_packed_linear``) that inductor calls as it is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from chameleon_sdk import BackendUnavailableError, ConfigError

__all__ = ["OneDNNPacked", "PackedLinear", "packed_linear"]


_LIBRARY = torch.library.Library("chameleon_quantization", "DEF")
_LIBRARY.define("onednn_packed_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor")


def packed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T + bias`` for a ``weight`` packed by ``mkldnn._reorder_linear_weight``.

    An op of its own so that ``torch.compile`` calls it as it is: inductor lowers the mkldnn op only
    for the weights its own freezing pass packed, and fails on others. It is defined with
    ``torch.library.Library`` rather than ``torch.library.custom_op``, whose Python wrapper cost
    about 10 us more per call (57 calls a step at the bench config)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")  # type: ignore[no-any-return]


# the packed weight's dispatch key is MkldnnCPU, the input's CPU: one kernel for both
_LIBRARY.impl("onednn_packed_linear", packed_linear, "CompositeExplicitAutograd")


@torch.library.register_fake("chameleon_quantization::onednn_packed_linear")
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
            return torch.ops.chameleon_quantization.onednn_packed_linear(x, self.weight, self.bias)  # type: ignore[no-any-return]
        # eagerly the op itself: through the custom op's Python dispatch, bf16 decoding of the bench
        # config ran at 104 tokens/s instead of 125 (57 linears a step)
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")  # type: ignore[no-any-return]

    def _apply(self, fn: Any, recurse: bool = True) -> PackedLinear:
        # what .to(), .float(), .cuda() run on every tensor
        self.check_conversion(fn, "this layer", checked_first=False)
        return super()._apply(fn, recurse)  # type: ignore[no-any-return]

    def check_conversion(self, fn: Any, name: str, *, checked_first: bool = True) -> None:
        """Raise :class:`ConfigError` (naming the layer ``name``) if ``fn``, a tensor conversion that
        ``nn.Module._apply`` runs, would change the packed weight; ``.to("cpu")`` passes.
        ``checked_first``: called before the module converted anything, so the error says so."""
        try:
            unchanged = fn(self.weight) is self.weight
        except (NotImplementedError, RuntimeError) as exc:  # torch's own error names an internal op
            unchanged, reason = False, f" ({type(exc).__name__}: {str(exc).splitlines()[0].split('. ')[0]})"
        else:
            reason = ""
        if not unchanged:
            nothing = " nothing was converted;" if checked_first else ""
            raise ConfigError(
                f"onednn-packed weights stay as packed (bf16, CPU), and {name} holds some:{nothing} "
                f"load the model again in the dtype and on the device you want{reason}"
            )

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
        packed = []
        for parent, name, path, linear in linears:
            layer = PackedLinear(linear)
            setattr(parent, name, layer)
            packed.append((path, layer))
        for path, module in model.named_modules():
            below = [(p, layer) for p, layer in packed if path == "" or p.startswith(f"{path}.")]
            if below:
                _check_before_converting(module, below)
        return model


def _check_before_converting(module: nn.Module, below: list[tuple[str, PackedLinear]]) -> None:
    """``module``'s ``_apply`` (what ``.to()``, ``.float()``, ``.cuda()`` run) checks the packed layers
    ``below`` it before converting anything, so a refused conversion leaves no layer converted."""
    convert = type(module)._apply

    def checked_apply(fn: Any, recurse: bool = True) -> nn.Module:
        for path, layer in below:
            layer.check_conversion(fn, path)
        return convert(module, fn, recurse)  # type: ignore[no-any-return]

    module._apply = checked_apply  # type: ignore[method-assign]
