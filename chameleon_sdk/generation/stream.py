"""Document-level generation: prompts in, typed events and documents out.

Built on :class:`TokenDecoder` and a :class:`~chameleon_sdk.MixedModalTokenizer`; ``Pipeline.stream``
and ``Pipeline.generate`` are thin wrappers that pass the pipeline's model, sampler and registry.
Nothing here is global: each call owns its decoder, cache and generator, so several pipelines can
generate from several threads at once.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from chameleon_sdk.contracts.modality import ConstrainingModality
from chameleon_sdk.document import Document, Image, Segment, Text, segment_of
from chameleon_sdk.errors import GenerationError
from chameleon_sdk.generation.compiled import CompileChoice
from chameleon_sdk.generation.engine import (
    SamplerChoice,
    StepOutput,
    TokenDecoder,
    build_samplers,
    check_model,
    default_stop_ids,
    seeded_generator,
)
from chameleon_sdk.generation.events import (
    BlockDone,
    BlockProgress,
    BlockStarted,
    Finished,
    FinishReason,
    GenerationEvent,
    ImageDone,
    ImageProgress,
    ImageStarted,
    TextDelta,
)
from chameleon_sdk.generation.request import (
    DEFAULT_MAX_BATCH,
    DecodeRequest,
    Guidance,
    check_batch_size,
    expand_modes,
)
from chameleon_sdk.model import ChameleonModel
from chameleon_sdk.plugins import PluginRegistry, get_registry
from chameleon_sdk.training.chat import ChatPrompt, chat_prompt_tokens
from chameleon_sdk.vocabulary import TEXT

if TYPE_CHECKING:
    from chameleon_sdk.tokenizer import MixedModalTokenizer

__all__ = ["DocumentStream", "prepare_stream", "stream_documents"]

#: new tokens per row when ``max_new_tokens`` is not given (fewer when the model's context is shorter)
DEFAULT_MAX_NEW_TOKENS = 256

#: one prompt: a document (a string is one text segment), or a chat so far for the assistant to answer
Prompt = Document | str | ChatPrompt
_ONE_PROMPT = (Document, str, ChatPrompt)


class _RowBuilder:
    """Turns one row's tokens into events and a document."""

    def __init__(
        self,
        tokenizer: MixedModalTokenizer,
        row: int,
        stop_strings: Sequence[str],
        progress_every: int | None,
        previews: bool = True,
    ) -> None:
        self.tokenizer, self.row = tokenizer, row
        self.stop_strings = [s for s in stop_strings if s]
        self.holdback = max((len(s) for s in self.stop_strings), default=1) - 1  # chars a stop string may still claim
        self.progress_every = progress_every
        self.previews = previews
        self.segments: list[Text | Image | Segment] = []
        self.text_ids: list[int] = []  # the current text run
        # text_ids[prefix:read] are decoded already and kept as left context for the next decode, so
        # each token costs a short decode instead of re-decoding the whole run
        self.prefix = self.read = 0
        self.text = ""  # decoded text of the current run
        self.emitted = 0  # characters of self.text already sent as deltas
        self.block: str | None = None
        self.codes: list[int] = []
        self.hit_stop_string = False
        vocab = tokenizer.vocabulary
        self.begin_of = {b.begin_id: name for name, b in vocab.blocks.items()}
        self.end_of = {b.end_id: name for name, b in vocab.blocks.items()}

    def feed(self, token: int) -> list[GenerationEvent]:
        vocab = self.tokenizer.vocabulary
        if token in self.begin_of and self.block is None:
            return [*self._flush_text(final=True), self._start(self.begin_of[token])]
        if self.block is not None:
            if token in self.end_of:
                return [self._end()]
            self.codes.append(token)
            every = self.progress_every
            partial = getattr(self.tokenizer.modalities.get(self.block), "decode_partial", None)
            if every and len(self.codes) % every == 0 and (partial is not None or not self.previews):
                preview = None
                if self.previews and partial is not None:
                    preview = partial(vocab.ids_to_codes(self.block, torch.tensor(self.codes)))
                cls = ImageProgress if self.block == "image" else BlockProgress
                return [cls(self.row, self.block, len(self.codes), preview)]
            return []
        if int(vocab.modality_index[token]) == TEXT:
            self.text_ids.append(token)
            self._extend_text(final=False)
            return self._flush_text(final=False)
        return []  # stop tokens and other structure are not content

    def _extend_text(self, *, final: bool) -> None:
        """Append the text of the pending ids; an incomplete UTF-8 sequence waits for more bytes."""
        if self.hit_stop_string or self.read == len(self.text_ids):
            return
        decode = self.tokenizer.text_tokenizer.decode
        context = decode(self.text_ids[self.prefix : self.read])
        decoded = decode(self.text_ids[self.prefix :])
        if decoded.endswith("\ufffd") and not final:
            return
        before = len(self.text)
        self.text += decoded[len(context) :]
        self.prefix, self.read = self.read, len(self.text_ids)
        self._cut_at_stop_string(since=max(0, before - self.holdback))

    def _cut_at_stop_string(self, *, since: int) -> None:
        """Cut the text at the first stop string ending in the new text (earlier text had none)."""
        hits = [i for i in (self.text.find(s, since) for s in self.stop_strings) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.hit_stop_string = True

    def _flush_text(self, *, final: bool) -> list[GenerationEvent]:
        if final:
            self._extend_text(final=True)
        end = len(self.text) if final else len(self.text) - self.holdback
        events: list[GenerationEvent] = []
        if end > self.emitted:
            events.append(TextDelta(self.row, self.text[self.emitted : end]))
            self.emitted = end
        if final:
            if self.text:
                self.segments.append(Text(self.text))
            self.text_ids, self.text, self.emitted, self.prefix, self.read = [], "", 0, 0, 0
        return events

    def _start(self, modality: str) -> GenerationEvent:
        self.block, self.codes = modality, []
        return (ImageStarted if modality == "image" else BlockStarted)(self.row, modality)

    def _end(self) -> GenerationEvent:
        name = self.block
        assert name is not None
        codes = self.tokenizer.vocabulary.ids_to_codes(name, torch.tensor(self.codes, dtype=torch.long))
        payload = self.tokenizer.modalities[name].decode(codes) if name in self.tokenizer.modalities else codes
        self.segments.append(segment_of(name, payload))
        self.block, self.codes = None, []
        return (ImageDone if name == "image" else BlockDone)(self.row, name, payload)

    def finish(self, reason: FinishReason) -> list[GenerationEvent]:
        events = self._flush_text(final=True)
        partial = getattr(self.tokenizer.modalities.get(self.block or ""), "decode_partial", None)
        if self.block is not None and self.codes and partial is not None:
            # stopped inside a block (max_tokens, max_time; a variable-length block can be cut anywhere):
            # keep what decode_partial makes of it, as detokenize(strict=False) does
            codes = self.tokenizer.vocabulary.ids_to_codes(self.block, torch.tensor(self.codes, dtype=torch.long))
            self.segments.append(segment_of(self.block, partial(codes)))
        return [*events, Finished(self.row, reason, Document(self.segments))]


class DocumentStream:
    """A :class:`TokenDecoder` and one event builder per prompt: decode steps in, events out.

    :func:`stream_documents` drives ``decoder.steps()`` itself; a scheduler that batches several
    streams in one forward pass calls ``decoder.advance(logits)`` and hands each step to :meth:`events`.
    """

    def __init__(self, decoder: TokenDecoder, rows: list[_RowBuilder], modes: list[str]) -> None:
        self.decoder, self.rows, self.modes = decoder, rows, modes

    def opening_events(self) -> Iterator[GenerationEvent]:
        """Modality-mode rows start inside their block: their started events, before any step."""
        for r, m in enumerate(self.modes):
            if m not in ("text", "interleaved"):
                yield self.rows[r]._start(m)

    def events(self, step: StepOutput) -> Iterator[GenerationEvent]:
        """The events of one decode step; a row that meets a stop string is finished here."""
        finished = dict(step.finished)
        tokens = step.tokens.tolist()
        for r in torch.nonzero(step.active).flatten().tolist():
            yield from self.rows[r].feed(tokens[r])
            if r not in finished and self.rows[r].hit_stop_string:
                self.decoder.finish(r, FinishReason.STOP_STRING)
                finished[r] = FinishReason.STOP_STRING
            if r in finished:
                yield from self.rows[r].finish(finished[r])


def stream_documents(
    tokenizer: MixedModalTokenizer, prompts: Prompt | Sequence[Prompt], **options: Any
) -> Iterator[GenerationEvent]:
    """Events of generating a continuation of each prompt. See ``Pipeline.stream``.

    Every option is checked, the prompts tokenized and the decoder built when this is called,
    before the first event, so a bad request fails here (a server can answer 400 before it sends
    any headers); iterating the result runs the model.
    """
    return _events(prepare_stream(tokenizer, prompts, **options))


def _events(stream: DocumentStream) -> Iterator[GenerationEvent]:
    yield from stream.opening_events()
    for step in stream.decoder.steps():
        yield from stream.events(step)


def prepare_stream(
    tokenizer: MixedModalTokenizer,
    prompts: Prompt | Sequence[Prompt],
    *,
    model: ChameleonModel | None = None,
    mode: str | Sequence[str] = "text",
    max_new_tokens: int | None = None,
    sampler: SamplerChoice | None = None,
    samplers: Mapping[str, SamplerChoice] | None = None,
    guidance: Guidance | None = None,
    stop: Sequence[str] = (),
    seed: int | None = None,
    max_time: float | None = None,
    progress_every: int | None = None,
    previews: bool = True,
    max_batch: int | None = DEFAULT_MAX_BATCH,
    chat: bool = False,
    registry: PluginRegistry | None = None,
    compile: CompileChoice = False,
) -> DocumentStream:
    """Check the options, tokenize the prompts and build the decoder (nothing is decoded yet).
    The options are those of ``Pipeline.stream``."""
    if model is None:
        raise GenerationError("the pipeline has no model: build one (pipe.model = pipe.build_model()) or pass model=")
    check_model(model)
    if isinstance(prompts, _ONE_PROMPT):
        batch: list[Prompt] = [prompts]
    elif isinstance(prompts, Sequence) and all(isinstance(p, _ONE_PROMPT) for p in prompts):
        batch = list(prompts)
    else:
        raise GenerationError(f"prompt must be a Document, a str, a ChatPrompt, or a list of them, got {prompts!r:.80}")
    if not batch:
        raise GenerationError("no prompts given")
    check_batch_size(len(batch), max_batch)  # before any tokenizing
    if isinstance(stop, str) or not isinstance(stop, Sequence) or not all(isinstance(s, str) for s in stop):
        raise GenerationError(f"stop must be a list of stop strings, got {stop!r}")
    if progress_every is not None and (
        isinstance(progress_every, bool) or not isinstance(progress_every, int) or progress_every <= 0
    ):
        raise GenerationError(f"progress_every must be a positive number of codes or None, got {progress_every!r}")
    if not isinstance(previews, bool):
        raise GenerationError(f"previews must be True or False, got {previews!r}")
    modes = expand_modes(mode, len(batch))
    if not isinstance(chat, bool):
        raise GenerationError(f"chat must be True or False, got {chat!r}")
    vocab = tokenizer.vocabulary
    ids = _prompt_tokens(tokenizer, batch, chat)
    chat = chat or any(isinstance(p, ChatPrompt) for p in batch)  # a chat's answer ends at end-of-turn
    if max_new_tokens is None:  # the default: up to 256, as far as the model's context allows
        room = model.config.max_seq_len - max(len(i) for i in ids)
        if room <= 0:
            raise GenerationError(
                f"the prompt ({max(len(i) for i in ids)} tokens) fills the model's max_seq_len "
                f"({model.config.max_seq_len}): shorten it"
            )
        max_new_tokens = min(DEFAULT_MAX_NEW_TOKENS, room)
    _check_decodable(tokenizer, modes)
    built = build_samplers("greedy" if sampler is None else sampler, samplers, registry or get_registry())
    constraints = {
        name: m.block_constraint(vocab)
        for name, m in tokenizer.modalities.items()
        if isinstance(m, ConstrainingModality)
    }
    request = DecodeRequest(
        max_new_tokens=max_new_tokens,
        modes=modes,
        vocabulary=vocab,
        stop_ids=default_stop_ids(vocab, chat=chat),
        guidance=guidance,
        max_time=max_time,
        constraints=constraints,
        max_batch=max_batch,
    )
    generator = seeded_generator(model, seed)
    decoder = TokenDecoder(model, ids, request, samplers=built, generator=generator, compile=compile)
    rows = [_RowBuilder(tokenizer, r, stop, progress_every, previews) for r in range(len(batch))]
    return DocumentStream(decoder, rows, list(modes))


def _check_decodable(tokenizer: MixedModalTokenizer, modes: Sequence[str]) -> None:
    """Refuse to draw payloads the modality cannot decode (``can_decode = False``: an image tokenizer
    without a decoder, as in the Hugging Face release) before spending the decode steps."""
    drawn = {m for m in modes if m != "text"}
    for name, modality in tokenizer.modalities.items():
        if getattr(modality, "can_decode", True) is False and (name in drawn or "interleaved" in drawn):
            raise GenerationError(
                f"modality {name!r} cannot decode what it would generate (its tokenizer has no decoder, as in "
                f"the Hugging Face release); use mode='text', or a checkpoint whose tokenizer has one (Meta's "
                f"layout, Anole)"
            )


def check_options(options: Mapping[str, Any]) -> None:
    """Refuse generation options :func:`stream_documents` does not take, naming the valid ones."""
    hidden = ("tokenizer", "prompts", "registry")
    valid = [name for name in inspect.signature(prepare_stream).parameters if name not in hidden]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise GenerationError(f"unknown generation option {unknown[0]!r}{hint}; valid options: {valid}")


def _prompt_tokens(tokenizer: MixedModalTokenizer, batch: Sequence[Prompt], chat: bool) -> list[list[int]]:
    """Each prompt's ids: a document (closed by end-of-turn when ``chat``), or a chat prompt's turns."""
    documents = [p for p in batch if not isinstance(p, ChatPrompt)]
    chats = [p for p in batch if isinstance(p, ChatPrompt)]
    document_ids = iter(tokenizer.tokenize_batch(documents, end_of_turn=chat) if documents else [])
    chat_ids = iter(chat_prompt_tokens(tokenizer, chats) if chats else [])
    return [next(chat_ids) if isinstance(p, ChatPrompt) else next(document_ids) for p in batch]


def generate_documents(
    tokenizer: MixedModalTokenizer, prompts: Prompt | Sequence[Prompt], **kwargs: Any
) -> Document | list[Document]:
    """Collect :func:`stream_documents` into documents (one, or a list for a batch)."""
    single = isinstance(prompts, _ONE_PROMPT)
    results: dict[int, Document] = {}
    for event in stream_documents(tokenizer, prompts, **kwargs):
        if isinstance(event, Finished):
            results[event.row] = event.document
    ordered = [results[r] for r in sorted(results)]
    return ordered[0] if single else ordered
