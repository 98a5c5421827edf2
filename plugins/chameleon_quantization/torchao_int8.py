"""Weight-only int8 through torchao: int8 weights with one scale per output channel, activations
kept in the model's dtype. Each linear layer's weight becomes a torchao tensor subclass whose
matmul dequantizes on the fly, so a decode step reads a quarter of the fp32 bytes (half of bf16).

torchao is imported only when a model is quantized, so the plugin registers without it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import attrs
from torch import nn

from chameleon_sdk import BackendUnavailableError

__all__ = ["Int8WeightOnly", "Int8WeightOnlyOptions"]


@attrs.frozen(kw_only=True)
class Int8WeightOnlyOptions:
    """Options of ``int8-weight-only``.

    :param output_head: quantize the LM head too (it is the largest matrix at small model sizes);
        False keeps it in the model's dtype, which costs bytes but keeps the logits closer.
    """

    output_head: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))


class Int8WeightOnly:
    """torchao's ``Int8WeightOnlyConfig`` applied to every ``nn.Linear`` of the model."""

    def __init__(self, options: Int8WeightOnlyOptions | None = None) -> None:
        self.options = options or Int8WeightOnlyOptions()

    def quantize(self, model: nn.Module) -> nn.Module:
        try:
            with _import_notices_muted():
                from torchao.quantization import Int8WeightOnlyConfig, quantize_
        except ImportError as exc:
            raise BackendUnavailableError(
                "quantization 'int8-weight-only' needs torchao: pip install 'chameleon-sdk[quantize]' "
                f"(importing it failed: {exc})"
            ) from exc

        head = getattr(model, "output", None)

        def wanted(module: nn.Module, name: str) -> bool:
            return isinstance(module, nn.Linear) and (self.options.output_head or module is not head)

        quantize_(model, Int8WeightOnlyConfig(), filter_fn=wanted)
        return model


#: loggers that warn while torchao is imported: torchao, for each optional kernel library it cannot
#: load on this machine (CUDA and MX builds, on a CPU), and torch, that torchao registers its enums
#: the deprecated way. Neither concerns someone asking for int8 weights, and `--quiet` printed both.
_IMPORT_LOGGERS = ("torchao", "torch.utils._pytree")


@contextlib.contextmanager
def _import_notices_muted() -> Iterator[None]:
    """Errors only from :data:`_IMPORT_LOGGERS`, while inside."""
    loggers = [logging.getLogger(name) for name in _IMPORT_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
