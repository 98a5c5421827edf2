"""The ``ddp`` and ``fsdp`` trainers: the shared loop (:mod:`chameleon_training.loop`) on PyTorch's
own data-parallel engines, one process per device, launched with ``torchrun``.

- Process group: joined from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...);
  gloo on CPU, nccl on CUDA (``cuda:LOCAL_RANK``). Without torchrun the trainer runs as a group of
  one. A group the caller already joined is used and left open.
- Data: every process computes the same global batch (``batch_at`` is a pure function of the step)
  and keeps its share of each micro-batch's rows, so the optimizer step equals ``local``'s on the
  same global batch. The processes compare a fingerprint of the first batch and stop with an error
  when they disagree (different data or tokenizer per process).
- Weights: rank 0's, on every process (DDP broadcasts them; ``fsdp`` shards rank 0's copy).
- ``ddp``: :class:`~torch.nn.parallel.DistributedDataParallel` around the model; checkpoints in
  the ``local`` layout (rank 0 writes them; they resume under ``local`` too).
- ``fsdp``: FSDP2 (:func:`torch.distributed.fsdp.fully_shard`) on each decoder block, then the root,
  on a one-dimensional :class:`~torch.distributed.device_mesh.DeviceMesh`, applied to a copy of the
  model; at the end the trained weights are gathered back into the model. Checkpoints are sharded
  with :mod:`torch.distributed.checkpoint` (see :mod:`chameleon_training.sharded`).
- RNG: each rank > 0 reseeds from (seed, rank) so dropout masks differ across processes; checkpoints
  keep every rank's RNG state.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import attrs
import torch
import torch.distributed as dist

from chameleon_sdk import CheckpointError, ConfigError, TrainingError, plugin_api
from chameleon_sdk.plugin_api import Batch
from chameleon_training.loop import CheckpointRequest, LoopTrainer, Strategy
from chameleon_training.options import TrainerOptions
from chameleon_training.sharded import load_sharded, save_sharded
from chameleon_training.state import (
    ADAPTER_DIR,
    MODEL_DIR,
    checkpoint_root,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

__all__ = ["DDPTrainer", "DistributedOptions", "FSDPOptions", "FSDPTrainer"]

TORCHRUN_HINT = "torchrun --nproc-per-node N -m chameleon_sdk train CONFIG.toml"


@attrs.frozen(kw_only=True)
class DistributedOptions(TrainerOptions):
    """Options of ``ddp`` (and ``fsdp``): those of ``local`` plus

    :param backend: ``auto`` (nccl where CUDA is available, else gloo), ``gloo`` or ``nccl``.
    """

    backend: Literal["auto", "gloo", "nccl"] = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "gloo", "nccl"))
    )


@attrs.frozen(kw_only=True)
class FSDPOptions(DistributedOptions):
    """Options of ``fsdp``: those of ``ddp`` plus

    :param reshard_after_forward: free each block's gathered weights after its forward pass (and
        gather them again for the backward pass): less memory, more communication. The root's own
        weights (embeddings, final norm, output head) always stay gathered until its backward pass.
    :param mixed_precision: ``bf16``: FSDP2's :class:`~torch.distributed.fsdp.MixedPrecisionPolicy`
        gathers the weights in bf16 for the forward and backward passes (half the all-gather
        traffic and gathered-weight memory) and reduces gradients in fp32; the sharded master
        weights and AdamW's state stay fp32. ``none``: the weights are gathered as stored.
    :param cpu_offload: keep the sharded weights, gradients and optimizer state in CPU memory
        (:class:`~torch.distributed.fsdp.CPUOffloadPolicy`); each block's weights are copied to the
        device for its forward and backward passes, and the optimizer steps on the CPU. Device
        memory then holds little more than activations and one gathered block.
    """

    reshard_after_forward: bool = True
    mixed_precision: Literal["none", "bf16"] = attrs.field(
        default="none", validator=attrs.validators.in_(("none", "bf16"))
    )
    cpu_offload: bool = False


class DataParallelStrategy(Strategy):
    """Process group, row split, reductions and per-rank RNG shared by ``ddp`` and ``fsdp``."""

    def __init__(self) -> None:
        self.options = DistributedOptions()
        self.owns_group = False
        self.checked_data = False
        self._device = torch.device("cpu")

    def setup(self, options: TrainerOptions) -> None:
        if not dist.is_available():
            raise ConfigError(f"trainer {self.name!r} needs a PyTorch build with torch.distributed")
        self.options = options if isinstance(options, DistributedOptions) else DistributedOptions()
        if dist.is_initialized():
            backend = "nccl" if "nccl" in str(dist.get_backend()) else "gloo"
        else:
            backend = self.options.backend
            if backend == "auto":
                backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl" and not torch.cuda.is_available():
                raise ConfigError("trainer option backend='nccl' needs CUDA; use 'gloo' (or 'auto') on CPU")
            if backend == "nccl":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            device_id = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else None
            if "WORLD_SIZE" in os.environ:  # started by torchrun (or another env:// launcher)
                dist.init_process_group(backend, device_id=device_id)
            else:  # a plain process: a group of one
                dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, device_id=device_id)
            self.owns_group = True
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self._device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        if self.rank > 0:  # independent dropout masks per process (restored from checkpoints on resume)
            torch.manual_seed((torch.initial_seed() * 1_000_003 + self.rank) % 2**63)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self.owns_group = False

    def finish(self, model: torch.nn.Module, module: torch.nn.Module) -> None:
        """Wait for every rank: none tears down its connections while another still uses them."""
        self.barrier()

    def device(self, module: torch.nn.Module) -> torch.device:
        return self._device

    def barrier(self) -> None:
        dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def latest(self, out_dir: Path) -> tuple[int, Path] | None:
        """Rank 0's view of the newest checkpoint, so that every rank resumes from the same one."""
        return self.broadcast(latest_checkpoint(out_dir) if self.is_main else None)

    def rows(self, batch: Batch) -> Batch:
        rows = batch.input_ids.shape[0]
        if rows < self.world_size:
            raise ConfigError(
                f"a micro-batch of {rows} rows cannot be split over {self.world_size} processes: "
                f"set data.batch_size to at least {self.world_size} (it is the global batch size)"
            )
        if not self.checked_data:
            self._check_same_data(batch)
        part = self.rank

        def mine(t: torch.Tensor) -> torch.Tensor:
            return t.tensor_split(self.world_size)[part]

        return Batch(mine(batch.input_ids), mine(batch.targets), mine(batch.document_ids))

    def _check_same_data(self, batch: Batch) -> None:
        digest = hashlib.sha256()
        for tensor in (batch.input_ids, batch.targets, batch.document_ids):
            digest.update(tensor.cpu().numpy().tobytes())
        fingerprints = self.gather(digest.hexdigest())
        if len(set(fingerprints)) > 1:
            raise TrainingError(
                "the processes computed different global batches for the same step: every process must "
                "build the same data and tokenizer (train the text tokenizer once and set its model_file)"
            )
        self.checked_data = True

    def reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def rank_rngs(self) -> list[dict[str, Any]]:
        return self.gather(plugin_api.global_rng_state())

    def restore_rng(self, state: dict[str, Any]) -> None:
        ranks = state.get("rng_ranks") or []
        plugin_api.set_global_rng_state(ranks[self.rank] if self.rank < len(ranks) else state["rng"])


class DDPStrategy(DataParallelStrategy):
    """DistributedDataParallel: the whole model on every process, gradients all-reduced."""

    name = "ddp"

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self._device)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self._device.index] if self._device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def grad_sync(self, wrapped: torch.nn.Module, enabled: bool) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext() if enabled else wrapped.no_sync()  # type: ignore[operator]

    def save(self, request: CheckpointRequest, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Path:
        rngs = self.rank_rngs()
        r = request
        path = plugin_api.step_directory(checkpoint_root(Path(r.out_dir)), r.step)
        if self.is_main:  # every rank holds the same weights and optimizer state
            extra = {**r.extra, "rng_ranks": rngs}
            path = save_checkpoint(r.out_dir, r.step, module, optimizer, extra, r.meta, keep_last=r.keep_last)
        self.barrier()
        return path

    def load(self, path: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        if (path / MODEL_DIR).is_dir() or (path / ADAPTER_DIR).is_dir():
            state = load_checkpoint(path, module, optimizer)
        else:
            raise CheckpointError(
                f"checkpoint {str(path)!r} has no model/ folder (a sharded fsdp checkpoint?): resume it with "
                "the trainer that wrote it, or train into a new out_dir"
            )
        self.restore_rng(state)
        return state


class FSDPStrategy(DataParallelStrategy):
    """FSDP2: parameters, gradients and optimizer state sharded over the processes."""

    name = "fsdp"

    def __init__(self) -> None:
        super().__init__()
        self.source = torch.nn.Module()  # the caller's model: rank 0's weights, and the trained ones at the end

    def setup(self, options: TrainerOptions) -> None:
        if options.anole:
            raise ConfigError("trainer option anole is not supported by 'fsdp' (it trains one matrix): use 'ddp'")
        super().setup(options)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """A copy of ``model`` with its parameters on the meta device (no memory): wrap() shards it."""
        if not isinstance(getattr(model, "layers", None), torch.nn.ModuleList):
            raise ConfigError(f"trainer 'fsdp' shards model.layers block by block; {type(model).__name__} has none")
        self.source = model
        memo: dict[int, Any] = {
            id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for p in model.parameters()
        }
        return copy.deepcopy(model, memo)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """Shard each block, then the root; materialise the shards and fill them with rank 0's weights."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self._device.type, (self.world_size,))
        reshard = getattr(self.options, "reshard_after_forward", True)
        policies = self._policies()
        for block in module.layers:  # type: ignore[union-attr]
            fully_shard(block, mesh=mesh, reshard_after_forward=reshard, **policies)
        # The root's weights (embeddings, final norm, output head) stay gathered from its forward pass
        # to its backward pass: they are needed at once, and its output (a ModelOutput) is not a
        # tensor on which every PyTorch release registers FSDP's pre-backward all-gather.
        fully_shard(module, mesh=mesh, reshard_after_forward=False, **policies)
        offload = "offload_policy" in policies
        module.to_empty(device=torch.device("cpu") if offload else self._device)
        buffers = dict(self.source.named_buffers())
        for prefix, owner in module.named_modules():
            for name, _ in owner.named_buffers(recurse=False):  # not FSDP's (rotary tables): where compute runs
                setattr(owner, name, buffers[f"{prefix}.{name}" if prefix else name].to(self._device, copy=True))
        full = self.source.state_dict() if self.is_main else {}
        set_model_state_dict(module, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        return module

    def _policies(self) -> dict[str, Any]:
        """``fully_shard``'s mixed-precision and offload policies, as the options select them."""
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy

        policies: dict[str, Any] = {}
        if getattr(self.options, "mixed_precision", "none") == "bf16":
            policies["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if getattr(self.options, "cpu_offload", False):
            policies["offload_policy"] = CPUOffloadPolicy(pin_memory=self._device.type == "cuda")
        return policies

    @contextlib.contextmanager
    def grad_sync(self, wrapped: torch.nn.Module, enabled: bool) -> Iterator[None]:
        wrapped.set_requires_gradient_sync(enabled)  # type: ignore[operator]
        yield

    def save(self, request: CheckpointRequest, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Path:
        return save_sharded(self, request, module, optimizer)

    def load(self, path: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        state = load_sharded(self, path, module, optimizer)
        self.restore_rng(state)
        return state

    def finish(self, model: torch.nn.Module, module: torch.nn.Module) -> None:
        """Gather the trained shards, one tensor at a time, into the caller's (unsharded) model."""
        target = model.state_dict()
        with torch.no_grad():
            for name, value in module.state_dict().items():
                full = value.full_tensor() if hasattr(value, "full_tensor") else value
                target[name].copy_(full)
        super().finish(model, module)


class DDPTrainer(LoopTrainer):
    """Data-parallel training with DistributedDataParallel (launch with ``torchrun``)."""

    def __init__(self, options: DistributedOptions | None = None) -> None:
        super().__init__(options or DistributedOptions())

    def strategy(self) -> Strategy:
        return DDPStrategy()


class FSDPTrainer(LoopTrainer):
    """Fully sharded data-parallel training with FSDP2 (launch with ``torchrun``)."""

    def __init__(self, options: FSDPOptions | None = None) -> None:
        super().__init__(options or FSDPOptions())

    def strategy(self) -> Strategy:
        return FSDPStrategy()
