"""The one-token decode step through ``torch.compile``.

At batch 1 a decode step reads every weight once, so its speed limit is memory bandwidth. Two
things stand between eager PyTorch and that limit on a CPU:

- per-op overhead: a step is ~400 small ops (norms, rotary, cache writes) around ~60 matmuls; one
  compiled graph runs them as a handful of fused C++ loops;
- the matrix-vector products themselves: for ``[M, K] @ [K, N]`` with a few rows ``M``, MKL's
  ``sgemm`` streamed weights at ~10 GB/s on the development CPU (AMD EPYC, AVX-512), a quarter of
  what a plain ``tensor.sum()`` reads. Inductor's vectorised reduction over ``K`` (the weight's
  contiguous axis), written as ``(x[:, None, :] * w[None]).sum(-1)``, read the bench config's LM
  head at 53 GB/s where MKL read it at 9. So on CPU the compiled step decomposes one-row matmuls
  (:data:`REDUCTION_MAX_ROWS`) into that reduction (accumulating in fp32 for every weight dtype);
  larger batches keep the library matmul, which reuses each weight across rows.

On CUDA the step is captured as a CUDA graph (``mode="reduce-overhead"``) and matmuls stay cuBLAS's.
The results equal eager decoding up to float rounding (a different summation order).

On CPU, after its first call, a decoder's step also skips dynamo's guard check
(:class:`GuardFreeStep`): with ~100 tensors to check (every weight, every layer's cache) the check
and its entry into the compiled region cost about a tenth of a bf16 step at the bench config.

``compile="frozen"`` (CPU) compiles with the weights frozen in as constants (:data:`FROZEN_PATCHES`):
inductor then packs them for its own C++ GEMM template where that times faster than the library
matmul, and half-precision matmuls stay matmuls at one row too (:func:`frozen_cpu_decode_backend`).
That pays in bf16 and int8 (bench config, one row: bf16 5.9 -> 3.6 ms a step, int8 3.1 -> 2.5;
3 rows in bf16: 7.94 -> 3.17). It costs a longer compile and memory for the packed copies; a model
whose weights are replaced or written in place is compiled again (:func:`frozen_decode_forward`).
"""

from __future__ import annotations

import types
import warnings
import weakref
from collections.abc import Callable
from typing import Any, Literal, cast

import attrs
import torch

__all__ = [
    "FROZEN_PATCHES",
    "REDUCTION_MAX_ROWS",
    "CompileChoice",
    "GuardFreeStep",
    "compile_decode_step",
    "cpu_decode_backend",
    "direct_integer_upcasts",
    "forget_frozen_code",
    "frozen_cpu_decode_backend",
    "frozen_decode_forward",
    "int8_upcasts_through_bf16",
]

#: the ``compile`` argument of the decoding functions: off, on, or on with the weights frozen in
CompileChoice = bool | Literal["frozen"]

#: matmuls with at most this many rows become a reduction on CPU. With 2-4 rows (a batch, or one
#: image row with classifier-free guidance) inductor 2.13 generated one loop nest for the whole step,
#: and a bench config step took 3x as long as with the library matmul (fp32, 2 rows: 19.4 vs 6.0 ms)
REDUCTION_MAX_ROWS = 1


def _materialized(a: torch.Tensor) -> torch.Tensor:
    """``a`` computed into its own buffer before a reduction reads it.

    Without this inductor inlines the producer of ``a`` (an RMSNorm, a SwiGLU) into the reduction's
    inner loop, so it is recomputed for every output row: for the LM head 16,384 times per step,
    which made the bf16 step compute-bound. Inductor's own prim for a fixed layout realizes its input.
    """
    force = getattr(torch.ops.prims, "inductor_force_stride_order", None)
    return a if force is None else force(a, a.stride())


def _mm_as_reduction(a: torch.Tensor, b: torch.Tensor) -> Any:
    """``a @ b`` for ``a`` ``[M, K]`` with few rows as a fused multiply-and-sum over ``K``."""
    if a.shape[0] > REDUCTION_MAX_ROWS or a.dtype != b.dtype or not a.dtype.is_floating_point:
        return NotImplemented  # inductor keeps aten.mm
    # [N, M, K] summed over K: the loop runs over the weight's rows outermost, so each weight row is
    # read from memory once for all M rows of ``a`` (with M outermost the LM head was streamed M
    # times, once per classifier-free-guidance row)
    weight = b.t().to(torch.float32)  # [N, K]: nn.Linear's weight, contiguous along K
    products = weight.unsqueeze(1) * _materialized(a.to(torch.float32)).unsqueeze(0)
    return products.sum(2).t().to(a.dtype)


#: integer dtypes whose every value a 16-bit float holds exactly
_EXACT_IN_HALF = (torch.int8, torch.uint8)


def _conversions_to_fp32(graph: torch.fx.Graph) -> list[torch.fx.Node]:
    """The graph's ``float32(x)`` nodes (a list: the passes insert nodes as they go)."""
    convert = torch.ops.prims.convert_element_type.default
    return [node for node in graph.nodes if node.target is convert and node.args[1] == torch.float32]


def direct_integer_upcasts(graph: torch.fx.Graph) -> int:
    """Rewrite ``float32(permute(bfloat16(w)))`` into ``float32(permute(w))`` for int8/uint8 ``w``.

    A weight-only int8 matmul (torchao's) dequantizes to the activations' dtype, and
    :func:`_mm_as_reduction` accumulates in fp32, so each weight element went int8 -> bf16 -> fp32
    in the inner loop of every one-row matmul. The bf16 step is exact for these integers, so
    skipping it changes no bit; it made the compiled int8 step 2.5-3.5x faster on the development
    CPU. Returns the number of conversions rewritten. (The permute is optional.)
    """
    convert = torch.ops.prims.convert_element_type.default
    permute = torch.ops.aten.permute.default
    rewritten = 0
    for node in _conversions_to_fp32(graph):
        source: Any = node.args[0]
        dims: Any = None
        if isinstance(source, torch.fx.Node) and source.target is permute:
            source, dims = source.args[0], source.args[1]
        if not isinstance(source, torch.fx.Node) or source.target is not convert:
            continue
        if source.args[1] not in (torch.bfloat16, torch.float16):
            continue
        integer: Any = source.args[0]
        value = integer.meta.get("val") if isinstance(integer, torch.fx.Node) else None
        if value is None or value.dtype not in _EXACT_IN_HALF:
            continue
        with graph.inserting_before(node):
            if dims is not None:
                permuted = graph.call_function(permute, (integer, dims))
                permuted.meta["val"] = value.permute(dims)
                integer = permuted
            direct = graph.call_function(convert, (integer, torch.float32))
            direct.meta["val"] = node.meta["val"]
        node.replace_all_uses_with(direct)
        graph.erase_node(node)
        rewritten += 1
    graph.eliminate_dead_code()
    return rewritten


def int8_upcasts_through_bf16(graph: torch.fx.Graph) -> int:
    """Rewrite ``float32(w)`` into ``float32(bfloat16(w))`` for int8 ``w`` (``permute(w)`` too).

    With frozen weights, inductor's constant folding would compute a weight-only int8 matmul's
    ``float32(w)`` (an fp32 model's dequantization) once, into an fp32 copy of the weight that every
    step then reads at four times the bytes: 2.6x slower than not freezing, at the bench config. It
    keeps ``bfloat16(w)`` of an int8 constant unfolded (its own rule for weight-only int8), so the
    frozen graph has the int8 weight, and :func:`direct_integer_upcasts` removes the exact bf16 step
    again after freezing. Returns the number of conversions rewritten.
    """
    convert = torch.ops.prims.convert_element_type.default
    rewritten = 0
    for node in _conversions_to_fp32(graph):
        source: Any = node.args[0]
        value = source.meta.get("val") if isinstance(source, torch.fx.Node) else None
        if value is None or value.dtype != torch.int8:
            continue
        with graph.inserting_before(node):
            half = graph.call_function(convert, (source, torch.bfloat16))
            half.meta["val"] = value.to(torch.bfloat16)
        node.replace_input_with(source, half)
        rewritten += 1
    return rewritten


def _graph_pass(rewrite: Callable[[torch.fx.Graph], int]) -> Any:
    """``rewrite`` as an inductor pass that its compile cache can key on."""
    from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

    class Rewrite(CustomGraphPass):
        def __call__(self, graph: torch.fx.Graph) -> None:
            rewrite(graph)

        def uuid(self) -> bytes:
            return get_hash_for_files((__file__,)) + rewrite.__name__.encode()

    return Rewrite()


def cpu_decode_backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
    """Inductor with small matmuls decomposed into reductions (see the module docstring) and
    integer weights converted to fp32 directly (:func:`direct_integer_upcasts`).

    A module-level function, so every decoder that compiles with it shares dynamo's cache.
    """
    return _inductor(gm, example_inputs, mm=_mm_as_reduction)


def _fp32_mm_as_reduction(a: torch.Tensor, b: torch.Tensor) -> Any:
    """:func:`_mm_as_reduction` for fp32 matmuls only: with frozen weights, the reduction's conversion
    of a half-precision weight to fp32 is constant-folded into an fp32 copy of it, read at twice the
    bytes; such a matmul stays a matmul, for inductor's GEMM template (or the library) to take."""
    return _mm_as_reduction(a, b) if a.dtype == torch.float32 else NotImplemented


def frozen_cpu_decode_backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
    """:func:`cpu_decode_backend` for ``compile="frozen"``: only fp32 one-row matmuls become
    reductions (:func:`_fp32_mm_as_reduction`), and int8 weights stay int8 in the frozen graph
    (:func:`int8_upcasts_through_bf16`)."""
    extra = {"joint_custom_pre_pass": _graph_pass(int8_upcasts_through_bf16)}
    return _inductor(gm, example_inputs, mm=_fp32_mm_as_reduction, extra=extra)


def _inductor(
    gm: torch.fx.GraphModule, example_inputs: list[Any], *, mm: Callable[..., Any], extra: dict[str, Any] | None = None
) -> Any:
    from torch._inductor.compile_fx import compile_fx
    from torch._inductor.decomposition import select_decomp_table

    decompositions = {**select_decomp_table(), torch.ops.aten.mm.default: mm}
    patches = {
        **(extra or {}),
        # no per-call size and alignment asserts on the ~100 inputs: dynamo's guards checked them on
        # the first call, and the step builds every later call's inputs the same way (6 % of a step)
        "size_asserts": False,
        "alignment_asserts": False,
        "post_grad_custom_pre_pass": _graph_pass(direct_integer_upcasts),
    }
    with warnings.catch_warnings():
        # inductor's autotuning (frozen weights) calls the deprecated ``Tensor.storage()``: not the
        # caller's concern, and under the CLI's --quiet it was the one line on stderr
        warnings.filterwarnings("ignore", "TypedStorage is deprecated", UserWarning)
        return compile_fx(gm, example_inputs, decompositions=decompositions, config_patches=patches)


#: the inductor settings under which ``compile="frozen"`` compiles (dynamo reads ``freezing`` when it
#: traces, so they wrap the call, not only the backend): the weights become constants of the
#: compiled code, so inductor may lay them out for its own C++ GEMM template and choose, by timing
#: each, between it and the library matmul (without writing each timing to stderr)
FROZEN_PATCHES: dict[str, Any] = {
    "freezing": True,
    "max_autotune": True,
    "max_autotune_gemm_backends": "CPP,ATEN",
    "autotune_num_choices_displayed": 0,
    "max_autotune_report_choices_stats": False,
}


def _decode_forward(model: torch.nn.Module, input_ids: torch.Tensor, cache: Any) -> Any:
    """What the CPU step compiles: the model's forward for the next token of every row."""
    return model(input_ids, cache=cache)


@attrs.define
class _FrozenForward:
    forward: Callable[..., Any]
    weights: tuple[tuple[int, int], ...]


#: each model's own copy of :func:`_decode_forward` for ``compile="frozen"``: dynamo keeps compiled
#: code per code object, and frozen code holds one model's weights as they were when it compiled
_FROZEN: weakref.WeakKeyDictionary[torch.nn.Module, _FrozenForward] = weakref.WeakKeyDictionary()


def _weights_state(model: torch.nn.Module) -> tuple[tuple[int, int], ...]:
    """Where every weight lives and how often it was written in place: what freezing would miss.
    A tensor without storage (oneDNN's packed layout) is known by its identity: the frozen code
    holds it, so no other tensor takes its ``id`` while that code is kept."""
    tensors = (*model.parameters(), *model.buffers())
    return tuple((id(t) if t.is_mkldnn else t.data_ptr(), t._version) for t in tensors)


def frozen_decode_forward(model: torch.nn.Module) -> Callable[..., Any]:
    """``model``'s own :func:`_decode_forward` for frozen compiling. When its weights were replaced
    or written in place since its code was compiled, that code is dropped, so the next call compiles
    again with the weights as they are now. A write through ``tensor.data``, which torch does not
    count as a write to the tensor, is not seen: call :func:`forget_frozen_code` after it."""
    state = _weights_state(model)
    frozen = _FROZEN.get(model)
    if frozen is None:
        code = _decode_forward.__code__.replace()  # the same code, a new object: a cache of its own
        forward = types.FunctionType(code, _decode_forward.__globals__, "_frozen_decode_forward")
        frozen = _FROZEN[model] = _FrozenForward(forward, state)
    elif frozen.weights != state:
        _drop_code(frozen, state)
    return frozen.forward


def forget_frozen_code(model: torch.nn.Module) -> None:
    """Drop ``model``'s frozen code, so its next ``compile="frozen"`` decode compiles with the weights
    as they are then: for writes torch does not count, such as peft's merge through ``weight.data``
    (:func:`~chameleon_sdk.merge_adapter` calls it)."""
    frozen = _FROZEN.get(model)
    if frozen is not None:
        _drop_code(frozen, _weights_state(model))


def _drop_code(frozen: _FrozenForward, state: tuple[tuple[int, int], ...]) -> None:
    from torch._dynamo.eval_frame import reset_code

    reset_code(cast(types.FunctionType, frozen.forward).__code__)
    frozen.weights = state


class GuardFreeStep:
    """Calls ``forward`` (:func:`_decode_forward` or a model's frozen copy of it) through
    ``torch.compile``, then without dynamo's guard check.

    The first call goes through dynamo: it compiles (or finds) the code for these inputs and checks
    its guards. That call's cache entry is then looked up once, with its guards checked against the
    same inputs, and later calls run the entry's code directly: the step's inputs keep the types and
    shapes that passed (one decoder, one model, one cache), except the dynamic slot count, which
    grows. Its guards (at least 2 slots; a view that is not the whole buffer, so not contiguous) can
    only fail at the ends of its range, so the caller asks for a guarded call there (``guarded``),
    and the entry is looked up on the first call inside it (dynamo compiles a call over one slot for
    that size alone). vLLM skips the guards of its compiled forward the same way. If no entry passes
    (dynamo ran the step eagerly), every call stays guarded.
    """

    def __init__(self, compiled: Callable[..., Any], forward: Callable[..., Any] = _decode_forward) -> None:
        """:param compiled: ``torch.compile(forward, ...)``."""
        self._compiled = compiled
        self._forward = forward
        self._code: Callable[..., Any] | None = None
        self._looked_up = False

    def __call__(self, model: torch.nn.Module, input_ids: torch.Tensor, cache: Any, *, guarded: bool = False) -> Any:
        if self._code is not None and not guarded:
            return self._code(model, input_ids, cache)
        out = self._compiled(model, input_ids, cache)
        if not self._looked_up and not guarded:
            self._looked_up = True
            self._code = _checked_entry(self._forward, {"model": model, "input_ids": input_ids, "cache": cache})
        return out


def _checked_entry(forward: Callable[..., Any], frame_locals: dict[str, Any]) -> Callable[..., Any] | None:
    """The code dynamo compiled for ``forward`` (a plain function) whose guards pass for ``frame_locals``."""
    from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list

    function = cast(types.FunctionType, forward)
    for entry in _debug_get_cache_entry_list(function.__code__):
        if entry.guard_manager.check(frame_locals):
            return types.FunctionType(entry.code, function.__globals__, function.__name__)
    return None


def compile_decode_step(
    model: torch.nn.Module, cache: Any, device: torch.device, *, frozen: bool = False
) -> Callable[..., Any]:
    """``model`` compiled for one-token steps over ``cache``: call it as ``step(input_ids, cache=cache)``.

    On CUDA the step is a CUDA graph, so its shapes never change: it attends over the whole static
    cache, whose buffers keep fixed addresses. On CPU it attends over the slots written so far (like
    the eager forward), with the slot dimension compiled as dynamic, so one graph serves every
    length: at the bench config with 3 rows and 1,100 slots, a step over 100 written slots took 7.9
    ms instead of 12.9 over the whole cache. Later decoders of the same batch size reuse the code.

    ``frozen`` (CPU only; ignored on CUDA, whose graphs are fast without it): the weights are frozen
    into the compiled code (:data:`FROZEN_PATCHES`, :func:`frozen_cpu_decode_backend`), which costs a
    longer compile and memory for the copies of the weights that inductor lays out anew, and pays
    for bf16 and int8 weights. A model whose weights changed since is compiled again
    (:func:`frozen_decode_forward`).
    """
    if device.type == "cuda":
        for name in ("keys", "values", "lengths", "next_position", "document_ids", "span_ids"):
            found = getattr(cache, name, None)
            for tensor in found if isinstance(found, list) else [found]:
                if isinstance(tensor, torch.Tensor):
                    torch._dynamo.mark_static_address(tensor)
        return torch.compile(model, mode="reduce-overhead", fullgraph=True, dynamic=False)
    forward = frozen_decode_forward(model) if frozen else _decode_forward
    backend = frozen_cpu_decode_backend if frozen else cpu_decode_backend
    through_dynamo = torch.compile(forward, backend=backend, fullgraph=True, dynamic=False)
    if frozen:
        through_dynamo = torch._inductor.config.patch(FROZEN_PATCHES)(through_dynamo)
    compiled = GuardFreeStep(through_dynamo, forward)
    marked = False

    def step(input_ids: torch.Tensor, *, cache: Any) -> Any:
        nonlocal marked
        written = cache.written_slots(input_ids.shape[1])
        slots = written.keys[0].shape[2]
        if not marked and slots >= 2:  # the graph, once compiled with a dynamic slot dimension, takes
            # any later length (one slot is compiled for itself: dynamo specializes sizes 0 and 1);
            # marking costs ~40 us a tensor: 0.6 ms a step at 8 layers if done every time
            for tensor in (*written.keys, *written.values):
                torch._dynamo.mark_dynamic(tensor, 2)  # [rows, kv heads, slots, head dim]
            for tensor in (written.document_ids, written.span_ids):
                if tensor is not None:
                    torch._dynamo.mark_dynamic(tensor, 1)  # [rows, slots]
            marked = True
        return compiled(model, input_ids, written, guarded=slots < 2 or slots == cache.max_len)

    return step
