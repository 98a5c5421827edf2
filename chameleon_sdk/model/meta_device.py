"""Building a model whose parameters are placeholders on the meta device (no memory, no init).

Checkpoint loaders build the model inside :func:`parameters_on_meta` and then hand it the stored
tensors with :func:`chameleon_sdk.plugin_api.load_weights`, which assigns them instead of copying: each weight
is materialised once, from the checkpoint, in the requested dtype.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_parameter_registration_hook
from torch.overrides import TorchFunctionMode

__all__ = ["meta_tensor_names", "parameters_on_meta"]


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Within the block, every parameter a module registers (in this thread) moves to the meta device.

    Buffers stay real on purpose (unlike ``with torch.device("meta")``): a non-persistent buffer
    (a rotary table, a mask) is computed in ``__init__`` and is not in the checkpoint, so it must
    keep the value its constructor gave it. Initialisers (``nn.init.normal_``...) called on a meta
    parameter return at once; the constructors' ``torch.empty`` allocations are freed before their
    pages are ever touched.
    """
    thread = threading.get_ident()

    def to_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> nn.Parameter | None:
        if param is None or param.is_meta or threading.get_ident() != thread:
            return None
        return nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    # torch annotates the hook as returning None, but uses the parameter it returns (as documented)
    handle = register_module_parameter_registration_hook(to_meta)  # type: ignore[arg-type]
    try:
        with _SkipMetaInitialisers():
            yield
    finally:
        handle.remove()


#: ``torch.nn.init``'s in-place initialisers and the tensor methods they end in
_INITIALISERS = frozenset(
    {torch.Tensor.normal_, torch.Tensor.uniform_}
    | {f for name, f in vars(nn.init).items() if name.endswith("_") and not name.startswith("_") and callable(f)}
)


class _SkipMetaInitialisers(TorchFunctionMode):
    """Initialisers called on a meta tensor return it at once (a mode is per thread).

    A meta tensor has no values to fill, but torch runs ``normal_`` on one through its Python
    reference implementation, whose first use imports ``torch._dynamo``: seconds per process.
    """

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in _INITIALISERS:
            target = args[0] if args else kwargs.get("tensor")
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


def meta_tensor_names(module: nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``module`` that are still meta placeholders."""
    tensors: list[tuple[str, torch.Tensor]] = [*module.named_parameters(), *module.named_buffers()]
    return [name for name, tensor in tensors if tensor.is_meta]
