"""The decode loop: one prefill, then one token per step per row, over the model's static KV cache.

Rows of different prompt lengths are prefilled together (right-padded; each row's cache length and
next rotary position are then set to its own prompt length, so padding is overwritten and never
attended). Every row stops on its own; the cache is kept across modality switches (no re-prefill).

Classifier-free guidance runs 2 or 3 physical rows per logical row (full prompt, image-only prompt,
unconditional prompt); they share every sampled token, so their caches stay aligned.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch

from chameleon_sdk.config import ComponentSpec
from chameleon_sdk.contracts.modality import BlockConstraint
from chameleon_sdk.contracts.sampler import Sampler
from chameleon_sdk.errors import GenerationError
from chameleon_sdk.generation.compiled import CompileChoice, compile_decode_step
from chameleon_sdk.generation.constraints import TEXT_MODES, ModalityStates
from chameleon_sdk.generation.events import FinishReason
from chameleon_sdk.generation.request import (
    DEFAULT_MAX_BATCH,
    DecodeRequest,
    Guidance,
    check_batch_size,
    expand_modes,
    is_int,
)
from chameleon_sdk.model import ChameleonModel, KVCache
from chameleon_sdk.plugins import PluginRegistry, get_registry
from chameleon_sdk.validation import check_int64
from chameleon_sdk.vocabulary import Vocabulary

__all__ = ["StepOutput", "TokenDecoder", "generate_tokens", "prefill_prompts"]

SamplerChoice = str | ComponentSpec | Mapping[str, Any] | Sampler


@attrs.frozen
class StepOutput:
    """One decode step. ``tokens[r]`` is row r's new token (``pad`` for rows that were done);
    ``active[r]`` says whether row r produced a token; ``finished`` lists rows ending at this step."""

    tokens: torch.Tensor
    active: torch.Tensor
    finished: list[tuple[int, FinishReason]]


def _as_prompts(input_ids: Any) -> tuple[list[list[int]], bool]:
    """Normalise prompts to a list of id lists; the flag says the input was a single 1-D prompt."""
    if isinstance(input_ids, (str, bytes)):
        raise GenerationError(f"input_ids must be token ids, got a {type(input_ids).__name__}: tokenize text first")
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
            raise GenerationError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
        if input_ids.dtype.is_floating_point or input_ids.dim() not in (1, 2):
            raise GenerationError(
                f"input_ids must be an integer tensor [T] or [B, T], got {input_ids.dtype} {tuple(input_ids.shape)}"
            )
        if input_ids.dim() == 1:
            return [input_ids.tolist()], True
        return input_ids.tolist(), False
    if isinstance(input_ids, Sequence) and input_ids and all(isinstance(i, int) for i in input_ids):
        if not all(map(is_int, input_ids)):
            raise GenerationError("input_ids holds True/False: token ids are integers, not booleans")
        return [list(input_ids)], True
    if isinstance(input_ids, Sequence) and all(
        isinstance(p, (Sequence, torch.Tensor)) and not isinstance(p, (str, bytes)) for p in input_ids
    ):
        prompts = [p.tolist() if isinstance(p, torch.Tensor) else list(p) for p in input_ids]
        bad = next(((r, i) for r, p in enumerate(prompts) for i in p if not is_int(i)), None)
        if bad is not None:
            raise GenerationError(f"input_ids: prompt {bad[0]} holds {bad[1]!r}, not an integer token id")
        return prompts, False
    raise GenerationError(
        f"input_ids must be a tensor, a list of ids or a list of id lists, got {type(input_ids).__name__}"
    )


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's parameters (CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def model_vocab_size(model: ChameleonModel) -> int:
    """Rows of the model's output head: the ids it can score."""
    return int(model.output.weight.shape[0])


def seeded_generator(model: torch.nn.Module, seed: int | None) -> torch.Generator | None:
    """A private generator on the model's device (None without a seed)."""
    if seed is None:
        return None
    check_int64(seed, "seed", error=GenerationError)
    generator = torch.Generator(device=model_device(model))
    generator.manual_seed(seed)
    return generator


def build_sampler(choice: SamplerChoice, registry: PluginRegistry) -> Sampler:
    """A sampler from a registry name, a spec/mapping, or a ready callable."""
    if callable(choice) and not isinstance(choice, (str, ComponentSpec)):
        return choice
    spec = ComponentSpec.of(choice)  # type: ignore[arg-type]
    return registry.build("sampler", spec.name, spec.options)


def build_samplers(
    sampler: SamplerChoice, samplers: Mapping[str, SamplerChoice] | None, registry: PluginRegistry
) -> dict[str, Sampler]:
    """``{"text": default, modality: override...}`` from names, specs or callables."""
    if samplers is not None and not isinstance(samplers, Mapping):
        raise GenerationError(f"samplers must map modality names to samplers, got {samplers!r}")
    built = {"text": build_sampler(sampler, registry)}
    built.update({name: build_sampler(choice, registry) for name, choice in (samplers or {}).items()})
    return built


def default_stop_ids(vocabulary: Vocabulary | None, *, chat: bool = False) -> list[int]:
    """eos, and end-of-turn too for a chat turn (Meta's text decoder samples eos and no other special
    token); nothing without a vocabulary (a malformed one is the request's to refuse)."""
    if not isinstance(vocabulary, Vocabulary):
        return []
    eot = vocabulary.specials.get("eot")
    return [vocabulary.specials["eos"], *([eot] if chat and eot is not None else [])]


def check_model(model: Any) -> None:
    """:class:`GenerationError` unless ``model`` can decode (a :class:`ChameleonModel` or one like it)."""
    config = getattr(model, "config", None)
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "new_cache") or not hasattr(config, "max_seq_len"):
        raise GenerationError(f"model must be a ChameleonModel (or one like it), got {type(model).__name__}")


@torch.no_grad()
def prefill_prompts(
    model: ChameleonModel, prompts: Sequence[Sequence[int]], *, pad_id: int, room: int
) -> tuple[KVCache, torch.Tensor]:
    """One forward pass over ``prompts`` (right-padded with ``pad_id`` to the longest): a new cache
    holding each prompt in its row, with ``room`` more slots per row, and the float logits
    ``[rows, V]`` of each prompt's last position."""
    device = model_device(model)
    width = max(len(p) for p in prompts)
    # padded on the host: one transfer, not one per prompt, and no device read for the width
    ids = torch.tensor([[*p, *[pad_id] * (width - len(p))] for p in prompts], dtype=torch.long, device=device)
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    cache = model.new_cache(len(prompts), width + room)
    logits = model(ids, cache=cache, logits_at=(lengths - 1).unsqueeze(1)).logits
    cache.truncate(lengths)  # drop each row's padding: its slots are overwritten by new tokens
    return cache, logits[:, 0].float()


class TokenDecoder:
    """Stateful decoding of a batch of prompts; iterate :meth:`steps` to run it.

    Most users call :func:`generate_tokens` or ``Pipeline.generate``/``stream``, which wrap this.
    """

    def __init__(
        self,
        model: ChameleonModel,
        prompts: list[list[int]],
        request: DecodeRequest | None = None,
        *,
        samplers: Mapping[str, Sampler],
        generator: torch.Generator | None = None,
        pad_id: int | None = None,
        compile: CompileChoice = False,
        **options: Any,
    ) -> None:
        """:param request: what to decode; or give its fields (``max_new_tokens``, ``modes``, ...) as
        keyword ``options`` and it is built from them."""
        if request is None:
            request = DecodeRequest(**options)
        elif options:
            raise GenerationError(f"TokenDecoder: give a DecodeRequest or its fields, not both ({sorted(options)})")
        check_model(model)
        max_new_tokens, modes, vocabulary = request.max_new_tokens, list(request.modes), request.vocabulary
        stop_ids, guidance, max_time, constraints = (
            request.stop_ids,
            request.guidance,
            request.max_time,
            request.constraints,
        )
        if not prompts or any(len(p) == 0 for p in prompts):
            raise GenerationError("every prompt needs at least one token (usually bos)")
        check_batch_size(len(prompts), request.max_batch)
        if len(modes) != len(prompts):
            raise GenerationError(f"got {len(modes)} modes for {len(prompts)} prompts")
        longest = max(len(p) for p in prompts)
        limit = model.config.max_seq_len
        if longest + max_new_tokens > limit:
            raise GenerationError(
                f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) = {longest + max_new_tokens} exceeds "
                f"the model's max_seq_len of {limit}: shorten the prompt or ask for fewer tokens"
            )
        vocab_size = model_vocab_size(model)
        flat = [i for p in prompts for i in p]
        if min(flat) < 0 or max(flat) >= vocab_size:
            bad = next(i for i in flat if not 0 <= i < vocab_size)
            raise GenerationError(f"prompt token {bad} is outside the model's vocabulary [0, {vocab_size})")
        if vocabulary is None and any(m != "text" for m in modes):
            raise GenerationError(
                "modes other than 'text' need a vocabulary: pass vocabulary=... or use a model that carries one"
            )
        if vocabulary is not None and vocabulary.size > vocab_size:
            raise GenerationError(f"the vocabulary has {vocabulary.size} ids but the model only {vocab_size}")
        if guidance is not None and vocabulary is None:
            raise GenerationError("classifier-free guidance needs a vocabulary (to find the text and the begin token)")
        if guidance is not None and vocabulary is not None and guidance.modality not in (None, *vocabulary.blocks):
            raise GenerationError(
                f"Guidance(modality={guidance.modality!r}): the vocabulary has no such modality; "
                f"its modalities: {sorted(vocabulary.blocks)} (or modality=None: the one being generated)"
            )
        if guidance is not None and all(m == "text" for m in modes):
            guidance = None  # guidance acts only inside blocks, and text mode never opens one
        if not (isinstance(compile, bool) or compile == "frozen"):
            raise GenerationError(f"compile={compile!r}: expected False, True or 'frozen'")
        self.model = model
        self.compile = compile
        self.vocabulary = vocabulary
        self.samplers = dict(samplers)
        if "text" not in self.samplers:
            raise GenerationError("samplers must include one for 'text' (the default for every modality)")
        self.guidance = guidance
        self.generator = generator
        self.deadline = None if max_time is None else time.monotonic() + max_time
        self.max_new_tokens = max_new_tokens
        self.rows = len(prompts)
        self.pad_id = pad_id if pad_id is not None else (vocabulary.specials["pad"] if vocabulary else 0)
        device = model_device(model)
        self.device = device
        self.vocab_size = vocab_size

        self.states: ModalityStates | None = None
        prompts = [list(p) for p in prompts]
        if vocabulary is not None:
            self.states = ModalityStates(
                vocabulary,
                modes,
                stop_ids=list(stop_ids),
                max_new_tokens=max_new_tokens,
                constraints=dict(constraints or {}),
                device=device,
            )
            for row, begin in self.states.begin_block_rows():
                if prompts[row][-1] != begin:
                    prompts[row].append(begin)
            self.states.open_blocks_for_mode_rows()
            block_budget = [m for m in modes if m not in TEXT_MODES]
            for mode in set(block_budget):
                needed = self.states.constraints[mode].tokens_needed
                if needed is not None and needed - 1 > max_new_tokens:
                    raise GenerationError(
                        f"mode {mode!r} needs {needed - 1} new tokens for one block, "
                        f"but max_new_tokens={max_new_tokens}"
                    )
        self.stop_ids = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
        self.physical_prompts = self._physical_prompts(prompts)
        self.k = 1 if guidance is None else guidance.rows
        self.done = torch.zeros(self.rows, dtype=torch.bool, device=device)
        self.reasons: list[FinishReason | None] = [None] * self.rows
        # new tokens per row, written in place each step; ``counts[r]`` of them are real
        self.out = torch.full((self.rows, max_new_tokens), self.pad_id, dtype=torch.long, device=device)
        self.counts = torch.zeros(self.rows, dtype=torch.long, device=device)
        self.seen = torch.zeros(self.rows, vocab_size, dtype=torch.bool, device=device)
        self._row_ids = torch.arange(self.rows, device=device)
        for r, p in enumerate(prompts):
            self.seen[r, torch.tensor(p, device=device)] = True

    def _physical_prompts(self, prompts: list[list[int]]) -> list[list[int]]:
        if self.guidance is None:
            return prompts
        vocab = self.vocabulary
        assert vocab is not None
        begins = {block.begin_id for block in vocab.blocks.values()}
        bos = vocab.specials["bos"]
        rows: list[list[int]] = []
        # Meta's image-only row keeps the payload blocks (codes, begin and end tokens) and bos: no text,
        # and no other special token (end-of-turn, reserved names)
        markers = torch.tensor([bos, *(i for b in vocab.blocks.values() for i in (b.begin_id, b.end_id))])
        for prompt in prompts:
            ids = torch.tensor(prompt)
            keep = (vocab.modality_index[ids] >= 0) | torch.isin(ids, markers)
            image_only = ids[keep].tolist()
            tail = [prompt[-1]] if prompt[-1] in begins else []
            uncond = [bos, *tail]
            rows += [prompt, image_only or [bos], uncond] if self.guidance.rows == 3 else [prompt, uncond]
        return rows

    def finish(self, row: int, reason: FinishReason) -> None:
        """End ``row`` now (for example on a stop string found by the caller)."""
        if self.reasons[row] is None:
            self.done[row] = True
            self.reasons[row] = reason

    @torch.no_grad()
    def _step(self, cache: Any, tokens: torch.Tensor) -> torch.Tensor:
        ids = (tokens if self.k == 1 else tokens.repeat_interleave(self.k)).unsqueeze(1)
        model = self._step_model if self.compile else self.model
        # a copy even in fp32: a CUDA graph's output buffer is overwritten by its next replay
        return model(ids, cache=cache).logits[:, -1].to(torch.float32, copy=True)

    def _choose(self, logits: torch.Tensor) -> torch.Tensor:
        """Guidance, constraints and sampling: physical logits -> one token per logical row."""
        if self.guidance is not None:
            grouped = logits.view(self.rows, self.k, -1)
            guided = self.guidance.combine(grouped)
            assert self.states is not None
            use = self.states.inside(self.guidance.modality).unsqueeze(1)  # None: inside any block
            logits = torch.where(use, guided, grouped[:, 0])
        logits = logits[:, : self.vocab_size]
        if self.states is not None:
            allowed = self.states.allowed()
            if allowed.shape[1] < logits.shape[1]:  # model ids beyond the vocabulary are never allowed
                allowed = torch.cat([allowed, allowed.new_zeros(self.rows, logits.shape[1] - allowed.shape[1])], 1)
            logits = logits.masked_fill(~allowed, float("-inf"))
        text_only = self.states is None or self.states.text_only
        if text_only and all(reason is None for reason in self.reasons):  # all live, known on the host: no sync
            return self.samplers["text"](logits, seen=self.seen, generator=self.generator).long()
        tokens = torch.full((self.rows,), self.pad_id, dtype=torch.long, device=self.device)
        groups = [("text", ~self.done)] if text_only else self._sampler_groups()
        for name, rows_mask in groups:
            rows = torch.nonzero(rows_mask).flatten()
            sampler = self.samplers.get(name, self.samplers["text"])
            if rows.numel() == self.rows:  # the groups are disjoint: one sampler for every row, no gather
                return sampler(logits, seen=self.seen, generator=self.generator).long()
            if rows.numel():
                tokens[rows] = sampler(logits[rows], seen=self.seen[rows], generator=self.generator).long()
        return tokens

    def _sampler_groups(self) -> list[tuple[str, torch.Tensor]]:
        assert self.states is not None
        live = ~self.done
        groups = [("text", live & (self.states.open_block < 0))]
        groups += [(name, live & self.states.inside(name)) for name in self.states.names]
        return groups

    def prefill(self) -> tuple[Any, torch.Tensor]:
        """The prompts' forward pass: a new cache holding every physical row's prompt and the float
        logits ``[physical rows, V]`` of each prompt's last position. For a scheduler that runs the
        decode steps of several decoders in one batch and calls :meth:`advance` itself."""
        cache, logits = prefill_prompts(self.model, self.physical_prompts, pad_id=self.pad_id, room=self.max_new_tokens)
        if self.compile:
            self._step_model = compile_decode_step(self.model, cache, self.device, frozen=self.compile == "frozen")
        return cache, logits

    def advance(self, logits: torch.Tensor) -> StepOutput:
        """One step from next-token ``logits`` ``[physical rows, V]`` computed elsewhere: guidance,
        constraints, sampling and the stop rules, as in :meth:`steps`. The caller feeds
        ``tokens.repeat_interleave(self.k)`` to the model next."""
        active = ~self.done
        tokens = self._choose(logits)
        return StepOutput(tokens=tokens, active=active, finished=self._record(tokens, active))

    @torch.no_grad()
    def steps(self) -> Iterator[StepOutput]:
        """Run the decode loop, yielding after every step. Closing the iterator stops the work.

        The model's module state is never touched (no ``eval()``/``train()``), so threads may decode
        on one shared model at once: training-only behaviour (dropout) is off because gradients are
        off here (the rule for stability tricks: act only when ``module.training and
        torch.is_grad_enabled()``). Gradient mode is per thread, and torch restores it around every
        step of this generator.
        """
        cache, logits = self.prefill()
        while not self.ended:
            active = ~self.done
            tokens = self._choose(logits)
            finished = self._record(tokens, active)
            yield StepOutput(tokens=tokens, active=active, finished=finished)
            if self.ended:
                break
            logits = self._step(cache, tokens)

    @property
    def ended(self) -> bool:
        """Every row has finished. Read from the host-side reasons, so asking costs no device sync."""
        return None not in self.reasons

    #: when several reasons end a row in the same step, the first of these is the one reported
    PRIORITY = (FinishReason.STOP, FinishReason.DONE, FinishReason.MAX_TOKENS, FinishReason.MAX_TIME)

    @property
    def tokens(self) -> list[list[int]]:
        """Each row's new tokens so far."""
        return [row[:n] for row, n in zip(self.out.tolist(), self.counts.tolist())]

    def _record(self, tokens: torch.Tensor, active: torch.Tensor) -> list[tuple[int, FinishReason]]:
        """Store the step's tokens and decide which rows end, in tensor ops; Python only sees the
        (few) rows that finish."""
        # a finished row's token is the pad id (:meth:`_choose`), written past its end, where the pad is
        self.out.scatter_(1, self.counts.unsqueeze(1), tokens.unsqueeze(1))
        self.counts += active.long()
        self.seen[self._row_ids, tokens] |= active
        if self.states is not None:
            stop = self.states.is_stop(tokens)
            block_done = self.states.update(tokens)
        else:
            stop = torch.isin(tokens, self.stop_ids)
            block_done = torch.zeros_like(stop)
        # per row, the 1-based position in PRIORITY of the first reason that applies (0: none)
        timed_out = self.deadline is not None and time.monotonic() >= self.deadline
        code = torch.full_like(self.counts, len(self.PRIORITY) if timed_out else 0)  # MAX_TIME applies to all
        applies = (stop, block_done, self.counts >= self.max_new_tokens)
        for number in range(len(applies), 0, -1):  # from the last, so the first that applies is kept
            code = torch.where(applies[number - 1], number, code)
        code = code * active
        finished: list[tuple[int, FinishReason]] = []
        rows = torch.nonzero(code).flatten()
        if not len(rows):  # the common step: no row ends
            return finished
        for r, c in zip(rows.tolist(), code[rows].tolist()):
            reason = self.PRIORITY[c - 1]
            self.done[r] = True
            self.reasons[r] = reason
            finished.append((r, reason))
        return finished

    def run(self) -> list[list[int]]:
        """Decode to the end; returns each row's new tokens."""
        for _ in self.steps():
            pass
        return self.tokens


def generate_tokens(
    model: ChameleonModel,
    input_ids: torch.Tensor | Sequence[int] | Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    mode: str | Sequence[str] = "text",
    sampler: SamplerChoice = "greedy",
    samplers: Mapping[str, SamplerChoice] | None = None,
    vocabulary: Vocabulary | None = None,
    stop_ids: Sequence[int] | None = None,
    guidance: Guidance | None = None,
    seed: int | None = None,
    max_time: float | None = None,
    constraints: Mapping[str, BlockConstraint] | None = None,
    registry: PluginRegistry | None = None,
    compile: CompileChoice = False,
    max_batch: int | None = DEFAULT_MAX_BATCH,
) -> torch.Tensor:
    """Generate token ids after ``input_ids``, without any tokenizer. The prompt is not returned.

    :param input_ids: one prompt (``[T]`` tensor or list) or a batch (``[B, T]`` tensor, or a list of
        lists of different lengths).
    :param mode: ``"text"``, ``"interleaved"`` or a modality name such as ``"image"`` (exactly one
        block, begin token appended to the prompt when missing, end token forced); one per row or
        one for all.
    :param sampler: a sampler plugin name (``"greedy"``, ``"sample"``), ``{"name", "options"}``, or a
        callable ``(logits, *, seen, generator) -> tokens``; used for text and any modality that
        ``samplers`` does not name.
    :param samplers: per-modality samplers, e.g. ``{"image": {"name": "sample", "options": {...}}}``.
    :param vocabulary: the token space; defaults to ``model.vocabulary`` when the model carries one.
        Without one only ``mode="text"`` is possible and no modality masks apply.
    :param stop_ids: tokens that end a row; defaults to the vocabulary's eos and end-of-turn.
    :param guidance: classifier-free guidance (:class:`Guidance`) inside blocks of the generated modality.
    :param seed: seeds a private ``torch.Generator``: the same seed gives the same tokens.
    :param max_time: seconds after which every row stops (reason ``max_time``).
    :param compile: run the one-token decode step through ``torch.compile`` (a CUDA graph on GPUs;
        on CPUs inductor's C++ code, see :mod:`chameleon_sdk.generation.compiled`): a one-off compile
        cost per shape for faster steps; worth it for long generations. ``"frozen"``: on a CPU the
        weights are also frozen into the compiled code, so inductor can use its own GEMM kernels,
        which pays for bf16 and int8 weights at any row count; it compiles for longer, holds packed
        copies of weights, and recompiles after the weights change (but not after writes through
        ``.data``); on CUDA it is ``True``.
    :param max_batch: refuse more prompts than this (:class:`GenerationError`); None: no limit.
    :returns: ``[N]`` for one prompt, ``[B, N]`` for a batch (rows padded with the pad id), where
        ``N`` is the longest row's count of new tokens.
    """
    prompts, single = _as_prompts(input_ids)
    check_model(model)
    vocabulary = vocabulary if vocabulary is not None else getattr(model, "vocabulary", None)
    request = DecodeRequest(
        max_new_tokens=max_new_tokens,
        modes=expand_modes(mode, len(prompts)),
        vocabulary=vocabulary,
        stop_ids=default_stop_ids(vocabulary) if stop_ids is None else stop_ids,
        guidance=guidance,
        max_time=max_time,
        constraints=constraints,
        max_batch=max_batch,
    )
    built = build_samplers(sampler, samplers, registry or get_registry())
    generator = seeded_generator(model, seed)
    decoder = TokenDecoder(model, prompts, request, samplers=built, generator=generator, compile=compile)
    decoder.run()
    out = decoder.out[:, : int(decoder.counts.max())].cpu()  # rows already padded with the pad id
    return out[0] if single else out
