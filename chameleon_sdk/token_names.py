"""The released checkpoints' token names <-> a :class:`Vocabulary`.

Both releases name every id: ``tokenizer.json`` / ``text_tokenizer.json`` (``model.vocab``) and the
Hugging Face ``config.json`` (``vocabulary_map``). Image codes are the names ``IMGIMG<digits><c>``:
the code's decimal digits written as the letters A-J (A = 0), then one final character. The
structural names are ``<s>`` (bos), ``<pad>``, ``</s>`` (eos), ``<reserved08706>`` (end of turn),
``<racm3:break>`` (begin of image) and ``<eoss>`` (end of image); ``transformers`` renames
``<reserved08707>`` to ``<image>``, its placeholder.

Every other name in angle brackets becomes a special keyed by its name: neither text nor an image
code, dropped when detokenizing and never sampled. Meta's decoder also never samples a text token
whose name merely starts with ``<`` (``<=``, ``</``...); those stay text (they decode as written)
and are the vocabulary's :attr:`~Vocabulary.unsampled` ids.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from chameleon_sdk.errors import CheckpointError, ConfigError
from chameleon_sdk.vocabulary import ModalityBlock, Vocabulary

__all__ = ["image_code", "image_name", "names_from_vocabulary", "vocabulary_from_names"]

IMAGE_PREFIX = "IMGIMG"
IMAGE_SUFFIX = "Z"  # the final character of generated image names; readers ignore it
ROLE_NAMES = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "eot": "<reserved08706>"}
BEGIN_IMAGE = "<racm3:break>"
END_IMAGE = "<eoss>"
RELEASED_IMAGE_OFFSET = 4
RELEASED_IMAGE_CODES = 8192
RELEASED_VOCAB_SIZE = 65536

_LETTER_DIGITS = {chr(ord("A") + d): str(d) for d in range(10)}


def image_code(name: str) -> int:
    """The image code an ``IMGIMG...`` token name stands for."""
    body = name[len(IMAGE_PREFIX) : -1]
    digits = "".join(_LETTER_DIGITS.get(c, c) for c in body)
    if not body or not digits.isdigit():
        raise CheckpointError(f"{name!r} is not an image token name (IMGIMG + letters A-J + one char)")
    return int(digits)


def image_name(code: int) -> str:
    """The token name of image code ``code`` (inverse of :func:`image_code`)."""
    return IMAGE_PREFIX + "".join(chr(ord("A") + int(d)) for d in str(code)) + IMAGE_SUFFIX


def _is_special_name(name: str) -> bool:
    return len(name) > 2 and name.startswith("<") and name.endswith(">")


def vocabulary_from_names(
    names: Mapping[str, int],
    *,
    size: int,
    fallback_ids: Mapping[str, int | None] | None = None,
    block_lengths: Mapping[str, int | None] | None = None,
    where: str = "the token names",
) -> Vocabulary:
    """The vocabulary that a name -> id mapping in the released convention describes.

    :param size: the vocabulary size (names with ids at or beyond it are ignored).
    :param fallback_ids: ids for bos/eos/pad when the names lack them (a config's ``bos_token_id``...).
    :param block_lengths: codes per image (``{"image": 1024}`` for the released models).
    :raises CheckpointError: on malformed image names, image codes that are not exactly ``0..n-1``,
        image codes without ``<racm3:break>``/``<eoss>``, or no bos/eos/pad.
    """
    if not isinstance(names, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in names.items()
    ):
        raise CheckpointError(f"{where}: expected a mapping of token names to integer ids")
    in_range = {name: i for name, i in names.items() if 0 <= i < size}

    codes: dict[int, int] = {}
    for name, token_id in in_range.items():
        if name.startswith(IMAGE_PREFIX):
            try:
                code = image_code(name)
            except CheckpointError as exc:
                raise CheckpointError(f"{where}: {exc}") from None
            if code in codes:
                raise CheckpointError(f"{where}: image code {code} is named twice")
            codes[code] = token_id
    blocks = []
    if codes:
        if sorted(codes) != list(range(len(codes))):
            missing = sorted(set(range(len(codes))) - set(codes))[:5]
            raise CheckpointError(f"{where}: image codes must be 0..{len(codes) - 1}; missing {missing}")
        if BEGIN_IMAGE not in in_range or END_IMAGE not in in_range:
            raise CheckpointError(f"{where}: has image codes but no {BEGIN_IMAGE!r} / {END_IMAGE!r} tokens")
        code_ids = torch.tensor([codes[c] for c in range(len(codes))], dtype=torch.long)
        blocks.append(
            ModalityBlock(
                modality="image",
                begin_id=in_range[BEGIN_IMAGE],
                end_id=in_range[END_IMAGE],
                code_ids=code_ids,
                block_length=(block_lengths or {}).get("image"),
            )
        )

    specials: dict[str, int] = {}
    for role, name in ROLE_NAMES.items():
        if name in in_range:
            specials[role] = in_range[name]
        elif fallback_ids and fallback_ids.get(role) is not None:
            specials[role] = int(fallback_ids[role])  # type: ignore[arg-type]
    for role in ("bos", "eos", "pad"):
        if role not in specials:
            raise CheckpointError(f"{where}: no {ROLE_NAMES[role]!r} token and no {role}_token_id")
    taken = set(specials.values()) | {b.begin_id for b in blocks} | {b.end_id for b in blocks}
    unsampled = []
    for name, token_id in sorted(in_range.items(), key=lambda item: item[1]):
        if token_id in taken or name.startswith(IMAGE_PREFIX):
            continue
        if _is_special_name(name):
            specials[name] = token_id
            taken.add(token_id)
        elif name.startswith("<") and name != "<":
            unsampled.append(token_id)

    released = (
        size >= RELEASED_VOCAB_SIZE
        and len(codes) == RELEASED_IMAGE_CODES
        and codes[0] == RELEASED_IMAGE_OFFSET
        and codes[len(codes) - 1] == RELEASED_IMAGE_OFFSET + len(codes) - 1
    )
    try:
        return Vocabulary(
            layout="chameleon" if released else "hf",
            size=size,
            specials=specials,
            blocks=blocks,
            unsampled=unsampled,
        )
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc


def names_from_vocabulary(vocabulary: Vocabulary) -> dict[str, int]:
    """The names a vocabulary determines: specials and image codes.

    Text ids get no names (they live in the text tokenizer); modalities other than ``image`` have
    no name in the released convention and are left out.
    """
    names: dict[str, int] = {}
    for role, token_id in vocabulary.specials.items():
        name = ROLE_NAMES.get(role, role)
        if _is_special_name(name):
            names.setdefault(name, int(token_id))
    image = vocabulary.blocks.get("image")
    if image is not None:
        names[BEGIN_IMAGE] = image.begin_id
        names[END_IMAGE] = image.end_id
        for code, token_id in enumerate(image.code_ids.tolist()):
            names[image_name(code)] = int(token_id)
    return names
