"""Attention backends honouring the contract ``backend(q, k, v, mask, scale) -> out``.

Shapes: ``q`` ``[B, H, Tq, Dh]``, ``k``/``v`` ``[B, KV, Tk, Dh]`` (``H % KV == 0``), ``out`` like ``q``.
The mask semantics are those of :meth:`chameleon_sdk.plugin_api.MaskSpec.allowed`.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs
import torch
import torch.nn.functional as F

from chameleon_sdk import BackendUnavailableError
from chameleon_sdk.plugin_api import MaskSpec

__all__ = ["EagerAttention", "FlashAttention", "FlexAttention", "FlexOptions", "SdpaAttention"]


def _is_plain_causal(mask: MaskSpec, q_len: int, kv_len: int) -> bool:
    return mask.q_offset is None and mask.q_document_ids is None and mask.q_span_ids is None and q_len == kv_len


class EagerAttention:
    """Explicit ``softmax(q k^T * scale + mask) v`` in fp32: the reference every backend is tested against."""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: MaskSpec, scale: float) -> torch.Tensor:
        batch, heads, q_len, _ = q.shape
        repeat = heads // k.shape[1]
        k = k.repeat_interleave(repeat, dim=1).float()
        v = v.repeat_interleave(repeat, dim=1).float()
        scores = (q.float() @ k.transpose(-1, -2)) * scale
        allowed = mask.allowed(batch, q_len, k.shape[2], q.device).unsqueeze(1)
        probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        return (probs @ v).to(q.dtype)


class SdpaAttention:
    """``torch.nn.functional.scaled_dot_product_attention``; a dense boolean mask unless plain causal."""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: MaskSpec, scale: float) -> torch.Tensor:
        batch, heads, q_len, _ = q.shape
        kv_len = k.shape[2]
        gqa = bool(heads != k.shape[1])  # a plain bool also when dynamo traces the shapes as symbols
        if _is_plain_causal(mask, q_len, kv_len):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
        allowed = mask.allowed(batch, q_len, kv_len, q.device).unsqueeze(1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale, enable_gqa=gqa)


@attrs.frozen(kw_only=True)
class FlexOptions:
    """Options of the ``flex`` backend.

    :param compile: wrap ``flex_attention`` in ``torch.compile`` (fused kernels). ``None``: only on
        CUDA; on CPU the uncompiled (unfused, slower) path is used, which is exact but not fast.
    """

    compile: bool | None = None


@functools.cache
def _compiled_flex() -> Any:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _mask_mod(mask: MaskSpec, q_len: int) -> Any:
    offset, q_docs, kv_docs = mask.q_offset, mask.q_document_ids, mask.kv_document_ids
    q_spans, kv_spans = mask.q_span_ids, mask.kv_span_ids

    def mask_mod(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        start = offset[b] if offset is not None else 0
        q_slot = q_idx + start
        allowed = kv_idx <= q_slot
        if q_spans is not None and kv_spans is not None:
            span = q_spans[b, q_idx]
            allowed = allowed | ((span == kv_spans[b, kv_idx]) & (span >= 0) & (kv_idx < start + q_len))
        if q_docs is not None and kv_docs is not None:
            allowed = allowed & (q_docs[b, q_idx] == kv_docs[b, kv_idx])
        return allowed

    return mask_mod


def refuses_whole_model_compile(device: torch.device) -> bool:
    """Whether ``flex`` refuses to be traced into a compiled model here: on CUDA (see ``FlexAttention``)."""
    return device.type == "cuda" and torch.compiler.is_compiling()


class FlexAttention:
    """``torch.nn.attention.flex_attention`` with a block mask built from the :class:`MaskSpec`.

    Packed documents and cached decoding skip fully masked blocks. On CUDA it is compiled by default.
    On CPU it runs uncompiled (exact, unfused) and forward only: torch has no flex backward on CPU,
    so a CPU call that needs gradients raises :class:`BackendUnavailableError`.
    """

    def __init__(self, options: FlexOptions | None = None) -> None:
        self.options = options or FlexOptions()
        # every layer of one forward gets the same MaskSpec object: build its block mask once
        self._last: tuple[MaskSpec, int, int, Any] | None = None

    def _block_mask(self, mask: MaskSpec, batch: int, q_len: int, kv_len: int, device: torch.device) -> Any:
        from torch.nn.attention.flex_attention import create_block_mask

        if torch.compiler.is_compiling():
            return create_block_mask(_mask_mod(mask, q_len), batch, None, q_len, kv_len, device=device)
        last = self._last
        if last is not None and last[0] is mask and last[1:3] == (q_len, kv_len):
            return last[3]
        block_mask = create_block_mask(_mask_mod(mask, q_len), batch, None, q_len, kv_len, device=device)
        self._last = (mask, q_len, kv_len, block_mask)
        return block_mask

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: MaskSpec, scale: float) -> torch.Tensor:
        from torch.nn.attention.flex_attention import flex_attention

        if (
            q.device.type == "cpu"
            and torch.is_grad_enabled()
            and (q.requires_grad or k.requires_grad or v.requires_grad)
        ):
            raise BackendUnavailableError(
                "attention backend 'flex' has no backward pass on CPU in this torch build; run it under "
                "torch.no_grad() / torch.inference_mode() on CPU, or train with 'sdpa' or 'eager'"
            )
        if refuses_whole_model_compile(q.device):
            raise BackendUnavailableError(
                "attention backend 'flex' inside a torch.compile'd model on CUDA: the block-mask kernels "
                "torch compiles there read out of bounds (an illegal memory access that breaks the whole CUDA "
                "context; seen with torch 2.11 on an H200, as in pytorch/pytorch#160018 and #174923). 'flex' "
                "compiles flex_attention itself, so leave the model uncompiled, or compile it with 'sdpa'"
            )
        batch, heads, q_len, _ = q.shape
        kv_len = k.shape[2]
        block_mask = self._block_mask(mask, batch, q_len, kv_len, q.device)
        compile_flex = self.options.compile if self.options.compile is not None else q.device.type == "cuda"
        fn = _compiled_flex() if compile_flex and not torch.compiler.is_compiling() else flex_attention
        gqa = bool(heads != k.shape[1])  # a plain bool also when dynamo traces the shapes as symbols
        return fn(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa)


class FlashAttention:
    """The ``flash-attn`` package's kernels (CUDA, fp16/bf16).

    Supports plain causal attention (``flash_attn_func``, with backward) and cached decoding with a
    per-row offset (``flash_attn_with_kvcache``, inference only). Packed documents and bidirectional
    spans are not supported: the model refuses them with ``UnsupportedMaskError``.
    """

    def __init__(self) -> None:
        try:
            import flash_attn
        except ImportError as exc:
            raise BackendUnavailableError(
                "attention backend 'flash' needs the 'flash-attn' package (pip install flash-attn) and a CUDA "
                f"GPU; importing it failed: {exc}. Use 'sdpa' or 'flex' instead."
            ) from exc
        self._flash_attn = flash_attn

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: MaskSpec, scale: float) -> torch.Tensor:
        if q.device.type != "cuda":
            raise BackendUnavailableError(f"attention backend 'flash' runs on CUDA only; got tensors on {q.device}")
        if q.dtype not in (torch.float16, torch.bfloat16):
            raise BackendUnavailableError(
                f"attention backend 'flash' computes in float16/bfloat16; got {q.dtype} (use autocast or 'sdpa')"
            )
        if mask.q_document_ids is not None or mask.q_span_ids is not None:
            raise BackendUnavailableError("attention backend 'flash' supports only causal and offset masks")
        q_len = q.shape[2]
        qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if mask.q_offset is None and q_len == k.shape[2]:
            out = self._flash_attn.flash_attn_func(qt, kt, vt, softmax_scale=scale, causal=True)
        else:
            offset = mask.q_offset if mask.q_offset is not None else torch.zeros(q.shape[0], device=q.device)
            # bottom-right aligned causal mask over the first offset + q_len keys == our slot semantics
            seqlens = (offset + q_len).to(torch.int32)
            out = self._flash_attn.flash_attn_with_kvcache(
                qt, kt.contiguous(), vt.contiguous(), cache_seqlens=seqlens, softmax_scale=scale, causal=True
            )
        return out.transpose(1, 2)
