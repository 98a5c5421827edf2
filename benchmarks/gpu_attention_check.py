"""GPU check of the attention backends (needs CUDA; flash-attn optional).

Run: ``python benchmarks/gpu_attention_check.py [--compiled BACKEND]``. It covers what the CPU tests cannot: compiled
``flex`` with block masks and its backward, ``flash`` (fp16/bf16 kernels), and every backend inside a
``torch.compile``-d model on CUDA. Each check compares against the ``eager`` reference and prints
PASS/FAIL/SKIP with the max error; the exit code is the number of failures. Tolerances: fp32 1e-4
(TF32 disabled), bf16 3e-2.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import chameleon_sdk
from chameleon_sdk import BackendUnavailableError, ModelConfig, build_model
from chameleon_sdk.plugin_api import MaskSpec

FAILURES = 0


def report(name: str, ok: bool | None, detail: str) -> None:
    global FAILURES
    status = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
    FAILURES += ok is False
    print(f"{status:4}  {name:55} {detail}", flush=True)


def random_case(gen: torch.Generator, dtype: torch.dtype, *, docs: bool, cached: bool):
    batch, kv_heads, heads, q_len, head_dim = 2, 2, 8, 257, 64
    offset = torch.tensor([0, 300], device="cuda") if cached else None
    kv_len = q_len + (400 if cached else 0)
    doc_ids = None
    if docs:
        doc_ids = torch.sort(torch.randint(0, 4, (batch, kv_len), generator=gen), dim=1).values.cuda()
    rows = torch.arange(q_len, device="cuda").expand(batch, q_len)
    if offset is not None:
        rows = rows + offset.unsqueeze(1)
    mask = MaskSpec(
        q_offset=offset,
        q_document_ids=doc_ids.gather(1, rows) if doc_ids is not None else None,
        kv_document_ids=doc_ids,
    )

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device="cuda", dtype=dtype)

    q = rand(batch, heads, q_len, head_dim)
    return q, rand(batch, kv_heads, kv_len, head_dim), rand(batch, kv_heads, kv_len, head_dim), mask


def check_kernels(registry: chameleon_sdk.PluginRegistry) -> None:
    eager = registry.build("attention", "eager")
    gen = torch.Generator().manual_seed(0)
    for record in registry.records("attention"):
        try:
            backend = record.build()
        except BackendUnavailableError as exc:
            report(f"{record.name}: build", None, str(exc)[:80])
            continue
        for dtype in (torch.float32, torch.bfloat16):
            for docs in (False, True):
                for cached in (False, True):
                    name = f"{record.name} {str(dtype)[6:]} docs={docs} cached={cached}"
                    q, k, v, mask = random_case(gen, dtype, docs=docs, cached=cached)
                    if not mask.kinds <= record.traits["mask_kinds"]:
                        report(name, None, "mask kinds not declared (the model refuses them)")
                        continue
                    try:
                        got = backend(q, k, v, mask, 0.125)
                    except BackendUnavailableError as exc:
                        report(name, None, str(exc)[:80])
                        continue
                    expected = eager(q.float(), k.float(), v.float(), mask, 0.125)
                    err = (got.float() - expected).abs().max().item()
                    tol = 1e-4 if dtype == torch.float32 else 3e-2
                    report(name, err <= tol, f"max err {err:.2e} (tol {tol:.0e})")


def check_flex_backward(registry: chameleon_sdk.PluginRegistry) -> None:
    gen = torch.Generator().manual_seed(1)
    q, k, v, mask = random_case(gen, torch.float32, docs=True, cached=False)
    grads = []
    for name in ("eager", "flex"):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        registry.build("attention", name)(*leaves, mask, 0.125).square().sum().backward()
        grads.append(torch.cat([t.grad.flatten() for t in leaves]))
    err = (grads[0] - grads[1]).abs().max().item()
    report("flex backward (documents) vs eager", err <= 1e-3, f"max grad err {err:.2e}")


def check_compiled_models(registry: chameleon_sdk.PluginRegistry, only: list[str] | None = None) -> None:
    config = ModelConfig(dim=256, num_layers=2, num_heads=8, num_kv_heads=2, vocab_size=1024, max_seq_len=512)
    ids = torch.randint(0, 1024, (2, 256), device="cuda")
    docs = torch.cat([torch.zeros(2, 100), torch.ones(2, 156)], 1).long().cuda()
    torch.manual_seed(0)
    reference = build_model(config, attention="eager", stability=["qk-norm"]).cuda().eval()
    for record in registry.records("attention"):
        if only and record.name not in only:
            continue
        name = f"compiled model, {record.name}"
        try:
            model = build_model(config, attention=record.name, stability=["qk-norm"]).cuda().eval()
        except BackendUnavailableError as exc:
            report(name, None, str(exc)[:80])
            continue
        model.load_state_dict(reference.state_dict())
        compiled = torch.compile(model, fullgraph=True)
        low = record.name == "flash"
        cases = [("causal", {})]
        if "document" in record.traits["mask_kinds"]:
            cases.append(("documents", {"document_ids": docs}))
        for case, kwargs in cases:
            try:
                start = time.perf_counter()
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=low):
                    got = compiled(ids, **kwargs).logits.float()
                with torch.no_grad():
                    expected = reference(ids, **kwargs).logits
                err = (got - expected).abs().max().item()
                tol = 0.1 if low else 1e-3
                seconds = time.perf_counter() - start
                detail = f"max err {err:.2e} (tol {tol:.0e}), {seconds:.1f}s incl. compile"
                report(f"{name}, {case}", err <= tol, detail)
            except BackendUnavailableError as exc:  # a backend that refuses to be compiled into a model
                report(f"{name}, {case}", None, str(exc)[:80])
            except torch.AcceleratorError as exc:
                # a CUDA error is sticky: every later CUDA call of this process fails too
                report(f"{name}, {case}", False, f"{type(exc).__name__}: {str(exc)[:120]}")
                raise SystemExit(f"{FAILURES} failure(s); stopped at a CUDA error (run --compiled NAME alone)") from exc
            except Exception as exc:
                report(f"{name}, {case}", False, f"{type(exc).__name__}: {str(exc)[:120]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compiled", action="append", metavar="BACKEND", help="only BACKEND's compiled-model check")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    registry = chameleon_sdk.get_registry()
    if not args.compiled:
        check_kernels(registry)
        check_flex_backward(registry)
    check_compiled_models(registry, args.compiled)
    print(f"{FAILURES} failure(s)")
    return FAILURES


if __name__ == "__main__":
    sys.exit(main())
