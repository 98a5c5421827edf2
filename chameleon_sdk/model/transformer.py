"""``ChameleonModel``: the decoder-only early-fusion transformer.

Text and image tokens share one vocabulary and one stack of blocks; nothing here is
modality-specific. Attention backends and stability tricks are plugins looked up by name.

Initialisation: every linear and embedding weight ~ N(0, init_std) (0.02 by default), except the
two projections that write into the residual stream (``attention.wo`` and ``feed_forward.w2``),
which use ``init_std / sqrt(2 * num_layers)`` (GPT-2's scaling: the residual stream sums
``2 * num_layers`` branch outputs, so its variance at init stays independent of depth). Norm gains
start at 1.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from chameleon_sdk.config import ComponentSpec, ModelConfig
from chameleon_sdk.contracts.stability import overrides
from chameleon_sdk.errors import ConfigError
from chameleon_sdk.model.cache import KVCache
from chameleon_sdk.model.cross_entropy import per_token_cross_entropy
from chameleon_sdk.model.head_loss import REPORTED_ONLY, chunked_head_loss, rows_per_chunk
from chameleon_sdk.model.layers import DecoderBlock, RMSNorm, rotary_tables
from chameleon_sdk.model.masking import MaskSpec, check_mask_support
from chameleon_sdk.model.routing import TokenRoute
from chameleon_sdk.plugins import PluginRegistry
from chameleon_sdk.vocabulary import Vocabulary

if TYPE_CHECKING:
    from chameleon_sdk.model.build import ModelParts

__all__ = ["ChameleonModel", "LossOutput", "ModelOutput", "document_positions"]


@dataclasses.dataclass
class ModelOutput:
    """What :meth:`ChameleonModel.forward` returns.

    :ivar logits: ``[B, T, V]`` (``[B, K, V]`` when ``forward`` was given ``logits_at`` ``[B, K]``);
        None when ``forward`` was given ``targets`` and computed the loss in chunks without them
        (``model.chunked_loss``).
    :ivar cache: the :class:`KVCache` passed in (now advanced), or None.
    :ivar stats: monitor values when ``model.collect_stats`` is on, else empty:
        ``layer_output_norm`` ``[L]`` (mean L2 norm of each block's output over the call's tokens),
        ``max_attention_logit`` ``[L]`` (largest allowed pre-softmax logit per layer),
        ``mean_log_z`` (scalar: mean logsumexp of the output logits; over the positions that have a
        target when the loss was computed in chunks).
    :ivar loss: the :class:`LossOutput` when ``forward`` was given ``targets``, else None.
    """

    logits: torch.Tensor | None
    cache: KVCache | None = None
    stats: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    loss: LossOutput | None = None


@dataclasses.dataclass
class LossOutput:
    """What :meth:`ChameleonModel.loss` returns: the total and every term by name (all detached but ``loss``)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


def document_positions(
    document_ids: torch.Tensor,
    *,
    previous_document: torch.Tensor | None = None,
    next_position: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rotary positions ``[B, T]`` that restart at 0 at every document boundary of ``document_ids``.

    With ``previous_document`` / ``next_position`` (``[B]``, from a KV cache) a first document that
    continues the row's previous one keeps counting from ``next_position``.
    """
    batch, length = document_ids.shape
    index = torch.arange(length, device=document_ids.device).expand(batch, length)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    if previous_document is not None:
        starts[:, 0] = document_ids[:, 0] != previous_document
    start_index = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    positions = index - start_index
    if previous_document is not None and next_position is not None:
        continues = (start_index == 0) & ~starts[:, :1]
        positions = positions + continues * next_position.unsqueeze(1)
    return positions


def _describe_value(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor {tuple(value.shape)}"
    return f"{type(value).__name__}: {value!r:.60}"


class ChameleonModel(nn.Module):
    """Token embedding, ``num_layers`` decoder blocks, final RMSNorm and an untied LM head.

    Build one with :func:`chameleon_sdk.build_model` (plugins by name); the module itself takes the
    already-built :class:`~chameleon_sdk.model.build.ModelParts` and knows no registry.

    :param config: the shape; ``config.vocab_size`` must be set (``Pipeline.build_model`` fills it).
    :param parts: the attention backend and stability tricks, built and checked by ``build_parts``.
    :param vocabulary: the token space, when known (generation uses it for modality masks).

    Set ``model.collect_stats = True`` to have every forward fill ``output.stats`` (monitors);
    it is off by default and then costs nothing.
    """

    def __init__(
        self,
        config: ModelConfig,
        parts: ModelParts | None = None,
        *,
        vocabulary: Vocabulary | None = None,
        attention: str | ComponentSpec | Mapping[str, Any] | None = None,
        stability: Iterable[str | ComponentSpec | Mapping[str, Any]] | None = None,
        registry: PluginRegistry | None = None,
    ) -> None:
        super().__init__()
        if parts is None:  # plugins by name: kept for one release
            from chameleon_sdk.model.build import build_parts

            warnings.warn(
                "ChameleonModel(config, attention=..., stability=...) is deprecated: use "
                "chameleon_sdk.build_model(config, attention=..., stability=...)",
                DeprecationWarning,
                stacklevel=2,
            )
            parts = build_parts(
                config,
                attention=attention or "sdpa",
                stability=stability or (),
                registry=registry,
                vocabulary=vocabulary,
            )
        assert config.vocab_size is not None, "build_parts checks the config"
        vocab_size = config.vocab_size
        self.config = config
        self.attention_spec = parts.attention_spec
        self.stability_specs = parts.stability_specs
        self.mask_kinds = parts.mask_kinds
        self._mask_kind_names = tuple(sorted(str(k) for k in self.mask_kinds))  # traceable by every dynamo
        self.tricks = parts.tricks
        qk = [t for t in self.tricks if overrides(t, "transform_qk")]
        branch = [t for t in self.tricks if overrides(t, "transform_branch")]
        self._logit_tricks = tuple(t for t in self.tricks if overrides(t, "transform_logits"))
        self._loss_tricks = tuple(t for t in self.tricks if overrides(t, "extra_loss"))
        self._tricks_per_position = all(t.per_position for t in self._logit_tricks + self._loss_tricks)
        self.collect_stats = False
        #: the token space the model was trained in, when known (set by pipelines and checkpoint loaders);
        #: generation uses it for modality masks when no vocabulary is passed
        self.vocabulary: Vocabulary | None = vocabulary
        #: where the weights came from, set by :func:`chameleon_sdk.load_model` (a ``CheckpointInfo``)
        self.checkpoint_info: Any = None

        #: how tokens are routed to parameter groups (None: every token uses the same weights)
        self.parameter_groups = parts.groups
        if self.parameter_groups is not None:
            self.register_buffer("token_group", self.parameter_groups.token_group.clone(), persistent=False)

        self.tok_embeddings = nn.Embedding(vocab_size, config.dim)
        self.layers = nn.ModuleList(
            DecoderBlock(
                config,
                i,
                parts.attention,
                layout=parts.layout,
                qk_tricks=qk,
                branch_tricks=branch,
                groups=self.parameter_groups,
            )
            for i in range(config.num_layers)
        )
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, vocab_size, bias=False)
        self.reset_parameters()
        for i, block in enumerate(self.blocks):
            for trick in self.tricks:
                trick.setup_block(block, i, config)
                trick.setup_attention(block.attention, i, config)

    @property
    def blocks(self) -> list[DecoderBlock]:
        """The decoder blocks (``self.layers``), typed."""
        return [cast(DecoderBlock, block) for block in self.layers]

    @property
    def layout(self) -> str:
        """The residual layout of the blocks (``pre_norm`` or ``reordered``)."""
        return self.blocks[0].layout

    def reset_parameters(self) -> None:
        """Re-initialise the core weights (see the module docstring); tricks' parameters are left alone."""
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.num_layers)
        nn.init.normal_(self.tok_embeddings.weight, mean=0.0, std=std)
        nn.init.normal_(self.output.weight, mean=0.0, std=std)
        nn.init.ones_(self.norm.weight)
        for block in self.blocks:
            attn, ffn = block.attention, block.feed_forward
            for linear in (attn.wq, attn.wk, attn.wv, ffn.w1, ffn.w3):
                nn.init.normal_(linear.weight, mean=0.0, std=std)
            for linear in (attn.wo, ffn.w2):
                nn.init.normal_(linear.weight, mean=0.0, std=residual_std)
            nn.init.ones_(block.attention_norm.weight)
            nn.init.ones_(block.ffn_norm.weight)

    def new_cache(
        self,
        batch: int,
        max_len: int | None = None,
        *,
        documents: bool = False,
        spans: bool = False,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """A :class:`KVCache` on this model's device (``max_len`` defaults to ``config.max_seq_len``,
        ``dtype`` to the weights' dtype; pass ``torch.bfloat16`` to halve it under autocast)."""
        weight = self.tok_embeddings.weight
        return KVCache(
            self.config,
            batch=batch,
            max_len=max_len or self.config.max_seq_len,
            dtype=dtype or weight.dtype,
            device=weight.device,
            documents=documents,
            spans=spans,
        )

    def _validate(self, input_ids: torch.Tensor, *tensors: torch.Tensor | None) -> None:
        if not isinstance(input_ids, torch.Tensor):
            raise ConfigError(f"input_ids must be an integer tensor [B, T], got {type(input_ids).__name__}")
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int32, torch.int64):
            raise ConfigError(
                f"input_ids must be an integer tensor [B, T], got {input_ids.dtype} {tuple(input_ids.shape)}"
            )
        if input_ids.numel():
            # one reduction (a device sync on GPUs, where the eager decode loop syncs every step anyway);
            # an out-of-range id would otherwise be an IndexError (a device assert on CUDA), also in a
            # one-token cached step
            low, high = torch.stack(torch.aminmax(input_ids)).tolist()
            size = self.config.vocab_size
            if low < 0 or high >= size:  # type: ignore[operator]
                raise ConfigError(
                    f"input_ids hold token {low if low < 0 else high}, outside the vocabulary [0, {size})"
                )
        for name, t in zip(("positions", "document_ids", "span_ids"), tensors):
            if t is None:
                continue
            if not isinstance(t, torch.Tensor) or t.dtype.is_floating_point or t.dtype in (torch.bool, torch.complex64):
                raise ConfigError(f"{name} must be an integer tensor [B, T] or None, got {_describe_value(t)}")
            if tuple(t.shape) != tuple(input_ids.shape):
                raise ConfigError(
                    f"positions/document_ids/span_ids must have input_ids' shape {tuple(input_ids.shape)}, "
                    f"got {tuple(t.shape)}"
                )

    @property
    def chunked_loss(self) -> bool:
        """Whether ``forward(targets=...)`` computes the loss in chunks of positions: every trick is per
        position (see ``per_position``) and the head is a plain ``nn.Linear``. A head an adapter wraps
        (LoRA on ``output``) computes whole logits, so that its own weights get their gradients."""
        return self._tricks_per_position and isinstance(self.output, nn.Linear)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        span_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        targets: torch.Tensor | None = None,
        ignore_index: int = -100,
        logits_at: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Logits for ``input_ids`` ``[B, T]``, and the loss when ``targets`` are given.

        :param positions: rotary positions ``[B, T]``; by default ``0..T-1``, restarting per document
            when ``document_ids`` are given, and continuing each row's cache.
        :param document_ids: ``[B, T]`` ids of packed documents, one contiguous run per document;
            attention stays inside a document (tokens with equal ids attend to each other).
        :param span_ids: ``[B, T]`` bidirectional span ids (``-1``: causal token); tokens of one span
            see each other in both directions (prefix-LM style).
        :param cache: a :class:`KVCache`; the tokens are appended to each row at ``cache.lengths``
            and attend to everything cached before them. The cache is advanced in place.
        :param targets: ``[B, T]``, the token each position should predict (``ignore_index``: none),
            as for :meth:`loss`; ``output.loss`` is then ``self.loss(logits, targets)``. When every
            trick allows it (``self.chunked_loss``) the loss is computed a chunk of positions at a
            time and ``output.logits`` is None: same loss and gradients, without the ``[B, T, V]``
            logits in memory, and positions without a target skip the LM head. Training only: not
            with a ``cache``. Under ``torch.compile`` the logits are computed as usual.
        :param logits_at: ``[B, K]`` indices into each row's ``T`` positions: only those positions go
            through the output head, and ``output.logits`` is ``[B, K, V]``. A prefill that needs
            each prompt's last logits passes ``lengths - 1`` (``[B, 1]``) and skips the head's work
            on every other position. Not with ``targets``.
        """
        if targets is not None and cache is not None:
            raise ConfigError("forward: targets (a training loss) cannot be combined with a KV cache")
        if targets is not None and logits_at is not None:
            raise ConfigError("forward: targets (a loss over every position) cannot be combined with logits_at")
        attended = cache
        if not torch.compiler.is_compiling():
            self._check_inputs(input_ids, positions, document_ids, span_ids, cache, targets, ignore_index)
            if logits_at is not None:
                self._check_logits_at(logits_at, input_ids.shape)
            if cache is not None:
                attended = cache.written_slots(input_ids.shape[1])
        mask, positions, slots = self._attention_inputs(input_ids, positions, document_ids, span_ids, attended)
        h, stats = self._trunk(input_ids, positions, mask, attended, slots)
        if targets is not None and self.chunked_loss and not torch.compiler.is_compiling():
            chunked = self._loss_in_chunks(h, targets, ignore_index, stats if self.collect_stats else None)
            return ModelOutput(logits=None, cache=None, stats=stats, loss=chunked)
        if logits_at is not None:
            h = h.gather(1, logits_at.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        logits = self.output(h)
        for trick in self._logit_tricks:
            logits = trick.transform_logits(logits)
        if attended is not None:
            attended.advance(input_ids.shape[1], positions)
        if self.collect_stats:
            stats["mean_log_z"] = torch.logsumexp(logits.detach().float(), dim=-1).mean()
        loss = None if targets is None else self._loss(logits, targets, ignore_index)  # checked above
        return ModelOutput(logits=logits, cache=cache, stats=stats, loss=loss)

    def _check_inputs(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None,
        document_ids: torch.Tensor | None,
        span_ids: torch.Tensor | None,
        cache: KVCache | None,
        targets: torch.Tensor | None,
        ignore_index: int,
    ) -> None:
        if cache is not None and not isinstance(cache, KVCache):
            raise ConfigError(f"cache must be a KVCache (model.new_cache()) or None, got {_describe_value(cache)}")
        self._validate(input_ids, positions, document_ids, span_ids)
        if targets is not None:
            self._check_targets(targets, ignore_index, shape=input_ids.shape)
        if cache is None and input_ids.shape[1] > self.config.max_seq_len:
            raise ConfigError(
                f"input_ids hold {input_ids.shape[1]} positions, more than the model's max_seq_len "
                f"({self.config.max_seq_len})"
            )

    @staticmethod
    def _check_logits_at(logits_at: torch.Tensor, shape: torch.Size) -> None:
        batch, length = shape
        if (
            not isinstance(logits_at, torch.Tensor)
            or logits_at.dtype not in (torch.int32, torch.int64)
            or logits_at.dim() != 2
            or logits_at.shape[0] != batch
        ):
            raise ConfigError(
                f"logits_at must be an integer tensor [B={batch}, K] of positions, got {_describe_value(logits_at)}"
            )
        if logits_at.numel() and not bool(((logits_at >= 0) & (logits_at < length)).all()):
            raise ConfigError(f"logits_at holds a position outside the {length} input positions [0, {length})")

    def _attention_inputs(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None,
        document_ids: torch.Tensor | None,
        span_ids: torch.Tensor | None,
        cache: KVCache | None,
    ) -> tuple[MaskSpec, torch.Tensor, torch.Tensor | None]:
        """The mask, the rotary positions and (with a cache) the cache slots the tokens are written to."""
        if cache is not None:
            mask, positions, slots = self._cached_mask(cache, input_ids, positions, document_ids, span_ids)
        else:
            batch, length = input_ids.shape
            if positions is None:
                positions = (
                    document_positions(document_ids)
                    if document_ids is not None
                    else torch.arange(length, device=input_ids.device).expand(batch, length)
                )
            mask = MaskSpec(
                q_document_ids=document_ids,
                kv_document_ids=document_ids,
                q_span_ids=span_ids,
                kv_span_ids=span_ids,
            )
            slots = None
        check_mask_support(self.attention_spec.name, self._mask_kind_names, mask)
        return mask, positions, slots

    def _trunk(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        mask: MaskSpec,
        cache: KVCache | None,
        slots: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The final-normed hidden states ``[B, T, D]``, and the monitors when ``collect_stats``."""
        rotary = rotary_tables(positions, self.config.head_dim, self.config.rope_theta)
        stats: dict[str, list[torch.Tensor]] | None = None
        if self.collect_stats:
            stats = {"layer_output_norm": [], "max_attention_logit": []}
        route = None
        if self.parameter_groups is not None:
            route = TokenRoute(cast(torch.Tensor, self.token_group)[input_ids], self.parameter_groups.count)
        h = self.tok_embeddings(input_ids)
        for block in self.layers:
            h = block(h, rotary, mask, cache, slots, stats, route)
            if stats is not None:
                stats["layer_output_norm"].append(h.detach().float().norm(dim=-1).mean())
        stacked = {name: torch.stack(values) for name, values in stats.items()} if stats is not None else {}
        return self.norm(h), stacked

    def _loss_in_chunks(
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        ignore_index: int,
        stats: dict[str, torch.Tensor] | None,
    ) -> LossOutput:
        def chunk_terms(
            rows: torch.Tensor, weight: torch.Tensor, chunk_targets: torch.Tensor
        ) -> dict[str, torch.Tensor]:
            logits = nn.functional.linear(rows, weight).unsqueeze(0)
            for trick in self._logit_tricks:
                logits = trick.transform_logits(logits)
            count = chunk_targets.numel()
            terms = {"cross_entropy": per_token_cross_entropy(logits[0].float(), chunk_targets, ignore_index).sum()}
            mask = torch.ones_like(chunk_targets, dtype=torch.bool).unsqueeze(0)
            for name, mean in self._extra_terms(logits, chunk_targets.unsqueeze(0), mask, terms).items():
                terms[name] = mean * count  # a mean over the chunk's targets (per_position): back to a sum
            if stats is not None:
                terms[REPORTED_ONLY] = torch.logsumexp(logits.detach().float(), dim=-1).sum()
            return terms

        flat = hidden.flatten(0, -2)
        rows = rows_per_chunk(self.config.vocab_size or 1, flat.device)
        total, terms = chunked_head_loss(
            flat, self.output.weight, targets.flatten(), chunk_terms, ignore_index=ignore_index, chunk_rows=rows
        )
        if stats is not None:
            stats["mean_log_z"] = terms.pop(REPORTED_ONLY)
        return LossOutput(loss=total, terms=terms)

    def _cached_mask(
        self,
        cache: KVCache,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None,
        document_ids: torch.Tensor | None,
        span_ids: torch.Tensor | None,
    ) -> tuple[MaskSpec, torch.Tensor, torch.Tensor]:
        batch, length = input_ids.shape
        if not torch.compiler.is_compiling():
            if cache.batch != batch:
                raise ConfigError(f"cache holds {cache.batch} rows but input_ids has {batch}")
            if document_ids is not None and not cache.documents:
                raise ConfigError("document_ids with a cache need a cache made with documents=True")
            if span_ids is not None and not cache.spans:
                raise ConfigError("span_ids with a cache need a cache made with spans=True")
        offset = cache.lengths.clone()
        slots = cache.slots(length)
        q_docs = None
        if cache.documents:
            previous = cache.last_document()
            q_docs = document_ids if document_ids is not None else previous.unsqueeze(1).expand(batch, length)
            if positions is None:
                positions = document_positions(q_docs, previous_document=previous, next_position=cache.next_position)
        if positions is None:
            positions = cache.next_position.unsqueeze(1) + torch.arange(length, device=input_ids.device)
        q_spans = None
        if cache.spans:
            q_spans = span_ids if span_ids is not None else torch.full_like(slots, -1)
        cache.write_tokens(slots, q_docs, q_spans)
        mask = MaskSpec(
            q_offset=offset,
            q_document_ids=q_docs,
            kv_document_ids=cache.document_ids if q_docs is not None else None,
            q_span_ids=q_spans,
            kv_span_ids=cache.span_ids if q_spans is not None else None,
        )
        return mask, positions, slots

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, *, ignore_index: int = -100) -> LossOutput:
        """Cross entropy (fp32, mean over counted targets) plus every trick's extra loss terms.

        ``targets[b, t]`` is the token that ``logits[b, t]`` should predict (already shifted: usually
        ``input_ids[:, 1:]`` against ``logits[:, :-1]``); ``ignore_index`` marks tokens that do not
        count (padding, prompt tokens in SFT). ``terms`` reports ``cross_entropy`` and each extra
        term by name, detached.
        """
        if logits.shape[:-1] != targets.shape:
            raise ConfigError(
                f"loss: targets {tuple(targets.shape)} must match logits[..., :-1] {tuple(logits.shape[:-1])}"
            )
        if not torch.compiler.is_compiling():
            self._check_targets(targets, ignore_index, vocab=logits.shape[-1])
        return self._loss(logits, targets, ignore_index)

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> LossOutput:
        """:meth:`loss` on targets already checked."""
        mask = targets != ignore_index
        count = mask.sum().clamp(min=1)
        per_token = per_token_cross_entropy(logits.float().flatten(0, -2), targets.flatten(), ignore_index)
        total = per_token.sum() / count
        terms = {"cross_entropy": total.detach()}
        for name, value in self._extra_terms(logits, targets, mask, terms).items():
            terms[name] = value.detach()
            total = total + value
        return LossOutput(loss=total, terms=terms)

    def _extra_terms(
        self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, taken: Mapping[str, Any]
    ) -> dict[str, torch.Tensor]:
        """Every loss trick's terms by name; a name already in ``taken`` or given twice is an error."""
        extra: dict[str, torch.Tensor] = {}
        for trick in self._loss_tricks:
            for name, value in trick.extra_loss(logits, targets, mask).items():
                if name in taken or name in extra or name == REPORTED_ONLY:
                    raise ConfigError(f"two loss terms are both named {name!r}")
                extra[name] = value
        return extra

    def _check_targets(
        self, targets: torch.Tensor, ignore_index: int, *, shape: torch.Size | None = None, vocab: int | None = None
    ) -> None:
        """Integer ids inside the vocabulary (or ``ignore_index``), and of ``shape`` when given."""
        if not isinstance(targets, torch.Tensor) or (shape is not None and targets.shape != shape):
            got = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
            expected = "a tensor" if shape is None else f"a tensor of shape {tuple(shape)} (one per input position)"
            raise ConfigError(f"targets must be {expected}, got {got}")
        if targets.dtype.is_floating_point or targets.dtype == torch.bool:
            raise ConfigError(f"targets must hold integer token ids, got dtype {targets.dtype}")
        vocab = vocab if vocab is not None else self.config.vocab_size or 0
        outside = ((targets < 0) | (targets >= vocab)) & (targets != ignore_index)
        if bool(outside.any()):
            bad = targets[outside][0]
            raise ConfigError(f"loss: target {int(bad)} is outside the vocabulary [0, {vocab})")
