"""Chat-format supervised fine-tuning data: conversations, and their tokens and loss mask.

A conversation is a list of turns, each a role (``system``, ``user`` or ``assistant``) and a
document. It is tokenized the way the released models were tuned to chat: the turns in order, an
end-of-turn token after every turn but the last, and eos after the last::

    [bos] user [eot] assistant [eot] user [eot] assistant [eos]

Only the assistant's tokens count in the loss, together with the token that closes each assistant
turn (its end-of-turn, or the final eos), so the model learns where its answer stops. Everything the
user (or a system turn) says, images included, is prompt: read, never trained on. An assistant turn
may hold images too; then the model is trained to draw them.

A one-turn ``{"prompt", "answer"}`` record is the conversation ``user: prompt, assistant: answer``.

A :class:`ChatPrompt` is a chat so far, ending with the user: generation lays it out the same way,
an end-of-turn token after every turn, so the model's next tokens are the assistant's turn.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from chameleon_sdk.document import Document
from chameleon_sdk.errors import DocumentError

if TYPE_CHECKING:
    from chameleon_sdk.tokenizer import DocumentTokenizer

__all__ = ["ROLES", "TRAINED_ROLE", "ChatPrompt", "Conversation", "Turn", "chat_prompt_tokens", "chat_tokens"]

#: the roles a turn may have; only the assistant's turns are trained on
ROLES = ("system", "user", "assistant")
TRAINED_ROLE = "assistant"


def _role(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if value not in ROLES:
        raise DocumentError(f"a turn's role must be one of {list(ROLES)}, got {value!r}")


def _document(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, Document):
        raise DocumentError(f"a turn's content must be a Document, got {type(value).__name__}")
    if len(value) == 0:
        raise DocumentError("a turn must have at least one segment")


@attrs.frozen
class Turn:
    """One turn of a conversation: who speaks, and what (any mixed-modal document)."""

    role: str = attrs.field(validator=_role)
    content: Document = attrs.field(validator=_document)


def _turns(value: Iterable[Turn]) -> tuple[Turn, ...]:
    return tuple(value)


def _alternating(turns: tuple[Turn, ...], what: str, last: str) -> None:
    """An optional system turn, then user and assistant turns alternating from the user, ending with ``last``."""
    if not all(isinstance(t, Turn) for t in turns):
        raise DocumentError(f"a {what}'s turns must be Turn objects")
    roles = [t.role for t in turns]
    spoken = [r for r in roles if r != "system"]
    if not spoken or spoken[-1] != last:
        raise DocumentError(f"a {what} must end with the {last}'s turn, got roles {roles}")
    if "system" in roles[1:]:
        raise DocumentError(f"a system turn may only come first, got roles {roles}")
    if spoken[0] != "user" or any(a == b for a, b in itertools.pairwise(spoken)):
        raise DocumentError(f"user and assistant turns must alternate, starting with the user, got roles {roles}")


def _structure(instance: object, attribute: attrs.Attribute, turns: tuple[Turn, ...]) -> None:
    _alternating(turns, "conversation", TRAINED_ROLE)


def _prompt_structure(instance: object, attribute: attrs.Attribute, turns: tuple[Turn, ...]) -> None:
    _alternating(turns, "chat prompt", "user")


def _turns_of(pairs: Sequence[tuple[str, Any]]) -> list[Turn]:
    return [Turn(role, c if isinstance(c, Document) else Document.of(*_items(c))) for role, c in pairs]


@attrs.frozen
class Conversation:
    """A chat to fine-tune on: an optional system turn, then user and assistant turns alternating,
    ending with the assistant."""

    turns: tuple[Turn, ...] = attrs.field(converter=_turns, validator=_structure)

    @property
    def documents(self) -> tuple[Document, ...]:
        """Every turn's content, in order."""
        return tuple(t.content for t in self.turns)

    @classmethod
    def of(cls, *pairs: tuple[str, Any]) -> Conversation:
        """``Conversation.of(("user", "hi"), ("assistant", "hello"))``; content as for :meth:`Document.of`
        (a string, an image, a list of segments...)."""
        return cls(_turns_of(pairs))

    def to_json(self, *, base_dir: str | os.PathLike[str] | None = None, image_dir: str = "images") -> dict[str, Any]:
        """``{"turns": [{"role", "segments"}, ...]}``; images as in :meth:`Document.to_json`."""
        return {
            "turns": [{"role": t.role, **t.content.to_json(base_dir=base_dir, image_dir=image_dir)} for t in self.turns]
        }

    @classmethod
    def from_json(
        cls, data: Any, *, base_dir: str | os.PathLike[str] | None = None, where: str = "conversation"
    ) -> Conversation:
        """Parse :meth:`to_json` data; image paths are resolved against ``base_dir``."""
        if not isinstance(data, dict) or set(data) != {"turns"} or not isinstance(data["turns"], list):
            raise DocumentError(f"{where}: expected an object with exactly one key, a 'turns' list")
        turns = []
        for i, raw in enumerate(data["turns"]):
            here = f"{where}, turn {i}"
            if not isinstance(raw, dict) or set(raw) != {"role", "segments"}:
                raise DocumentError(f"{here}: expected an object with 'role' and 'segments', got {raw!r:.80}")
            if raw["role"] not in ROLES:
                raise DocumentError(f"{here}: role must be one of {list(ROLES)}, got {raw['role']!r}")
            content = Document.from_json(raw, base_dir=base_dir, where=here)
            if len(content) == 0:
                raise DocumentError(f"{here}: a turn must have at least one segment")
            turns.append(Turn(raw["role"], content))
        try:
            return cls(turns)
        except DocumentError as exc:
            raise DocumentError(f"{where}: {exc}") from exc

    @classmethod
    def from_prompt_answer(cls, prompt: Document, answer: Document) -> Conversation:
        """The one-exchange conversation of an ``{"prompt", "answer"}`` SFT record."""
        return cls((Turn("user", prompt), Turn(TRAINED_ROLE, answer)))


@attrs.frozen
class ChatPrompt:
    """A chat so far, for the model to answer as the assistant: an optional system turn, then user
    and assistant turns alternating, ending with the user. ``Pipeline.generate(ChatPrompt(...))``
    lays it out as fine-tuning lays out a :class:`Conversation`: an end-of-turn token after every turn."""

    turns: tuple[Turn, ...] = attrs.field(converter=_turns, validator=_prompt_structure)

    @classmethod
    def of(cls, *pairs: tuple[str, Any]) -> ChatPrompt:
        """``ChatPrompt.of(("user", "hi"), ("assistant", "hello"), ("user", [picture, "and this?"]))``."""
        return cls(_turns_of(pairs))


def _items(content: Any) -> Sequence[Any]:
    return content if isinstance(content, (list, tuple)) else (content,)


def chat_tokens(pipe: DocumentTokenizer, conversations: Sequence[Conversation]) -> list[tuple[list[int], list[int]]]:
    """Token ids of each conversation and a 0/1 loss mask over them (see the module docstring).

    Every turn is tokenized on its own (text never merges across a turn boundary), all turns of all
    conversations in one :meth:`~chameleon_sdk.MixedModalTokenizer.tokenize_batch` call, so images
    are encoded in batches.
    """
    return _laid_out(pipe, [c.turns for c in conversations], answered=True)


def chat_prompt_tokens(pipe: DocumentTokenizer, prompts: Sequence[ChatPrompt]) -> list[list[int]]:
    """Token ids of each chat prompt: its turns as :func:`chat_tokens` lays them out, each closed by
    the end-of-turn token (the last too: the assistant's turn comes next)."""
    return [ids for ids, _ in _laid_out(pipe, [p.turns for p in prompts], answered=False)]


def _laid_out(
    pipe: DocumentTokenizer, chats: Sequence[tuple[Turn, ...]], *, answered: bool
) -> list[tuple[list[int], list[int]]]:
    """``[bos]``, then every turn and its closing token: end-of-turn, or eos after the last turn of an
    ``answered`` chat; with the 0/1 loss mask of the assistant's tokens."""
    specials = pipe.vocabulary.specials
    bos, eos, eot = specials["bos"], specials["eos"], specials.get("eot", specials["eos"])
    pieces = iter(pipe.tokenize_batch([t.content for turns in chats for t in turns], bos=False, eos=False))
    out = []
    for turns in chats:
        ids, mask = [bos], [0]
        last = len(turns) - 1
        for i, turn in enumerate(turns):
            body = [*next(pieces), eos if answered and i == last else eot]
            ids += body
            mask += [int(turn.role == TRAINED_ROLE)] * len(body)
        out.append((ids, mask))
    return out
