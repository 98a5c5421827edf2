"""The ``vocabulary_map`` of a Hugging Face Chameleon ``config.json`` <-> a :class:`chameleon_sdk.Vocabulary`.

In that map every token name points to its id. Image codes are the names ``IMGIMG<digits><c>``:
the code's decimal digits written as the letters A-J (A = 0), then one final character. Names in
angle brackets are special tokens; the released vocabulary names its structural ones ``<s>`` (bos),
``<pad>``, ``</s>`` (eos), ``<reserved08706>`` (end of turn), ``<racm3:break>`` (begin of image)
and ``<eoss>`` (end of image); ``transformers`` renames ``<reserved08707>`` to ``<image>``, its
placeholder. Every other angle-bracket name becomes a special keyed by its name, so it is neither
text nor an image code. Text names are not kept: they belong to the text tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from chameleon_sdk import CheckpointError, ConfigError, ModalityBlock, Vocabulary

IMAGE_PREFIX = "IMGIMG"
IMAGE_SUFFIX = "Z"  # the final character of generated image names; readers ignore it
ROLE_NAMES = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "eot": "<reserved08706>"}
BEGIN_IMAGE = "<racm3:break>"
END_IMAGE = "<eoss>"
RELEASED_IMAGE_OFFSET = 4
RELEASED_VOCAB_SIZE = 65536

_LETTER_DIGITS = {chr(ord("A") + d): str(d) for d in range(10)}


def image_code(name: str) -> int:
    """The image code an ``IMGIMG...`` token name stands for."""
    body = name[len(IMAGE_PREFIX) : -1]
    digits = "".join(_LETTER_DIGITS.get(c, c) for c in body)
    if not body or not digits.isdigit():
        raise CheckpointError(f"vocabulary_map: {name!r} is not an image token name (IMGIMG + letters A-J + one char)")
    return int(digits)


def image_name(code: int) -> str:
    """The token name of image code ``code`` (inverse of :func:`image_code`)."""
    return IMAGE_PREFIX + "".join(chr(ord("A") + int(d)) for d in str(code)) + IMAGE_SUFFIX


def vocabulary_from_map(
    vocabulary_map: Mapping[str, int],
    *,
    size: int,
    fallback_ids: Mapping[str, int | None] | None = None,
) -> Vocabulary:
    """Build the vocabulary a ``vocabulary_map`` describes.

    :param size: the model's vocabulary size (ids at or beyond it are ignored).
    :param fallback_ids: ids for bos/eos/pad when the map lacks their names (the config's
        ``bos_token_id`` and friends).
    :raises CheckpointError: on malformed names, image codes that are not exactly ``0..n-1``, or
        image codes without ``<racm3:break>``/``<eoss>``.
    """
    where = "config.json vocabulary_map"
    if not isinstance(vocabulary_map, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in vocabulary_map.items()
    ):
        raise CheckpointError(f"{where}: expected a mapping of token names to integer ids")
    in_range = {name: i for name, i in vocabulary_map.items() if 0 <= i < size}

    codes: dict[int, int] = {}
    for name, token_id in in_range.items():
        if name.startswith(IMAGE_PREFIX):
            code = image_code(name)
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
        begin, end = in_range[BEGIN_IMAGE], in_range[END_IMAGE]
        blocks.append(ModalityBlock(modality="image", begin_id=begin, end_id=end, code_ids=code_ids))

    specials: dict[str, int] = {}
    for role, name in ROLE_NAMES.items():
        if name in in_range:
            specials[role] = in_range[name]
        elif fallback_ids and fallback_ids.get(role) is not None:
            specials[role] = int(fallback_ids[role])  # type: ignore[arg-type]
    for role in ("bos", "eos", "pad"):
        if role not in specials:
            raise CheckpointError(f"{where}: no {ROLE_NAMES[role]!r} token and no {role}_token_id in the config")
    taken = set(specials.values()) | ({b.begin_id for b in blocks} | {b.end_id for b in blocks})
    for name, token_id in sorted(in_range.items(), key=lambda item: item[1]):
        if name.startswith("<") and name.endswith(">") and token_id not in taken:
            specials[name] = token_id
            taken.add(token_id)

    released = (
        size >= RELEASED_VOCAB_SIZE
        and len(codes) == 8192
        and codes[0] == RELEASED_IMAGE_OFFSET
        and codes[len(codes) - 1] == RELEASED_IMAGE_OFFSET + len(codes) - 1
    )
    try:
        return Vocabulary(layout="chameleon" if released else "hf", size=size, specials=specials, blocks=blocks)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc


def map_from_vocabulary(vocabulary: Vocabulary) -> dict[str, int]:
    """The ``vocabulary_map`` entries a vocabulary determines: specials and image codes.

    Text ids get no names (they live in the tokenizer); modalities other than ``image`` have no
    representation in this format and are left out.
    """
    names: dict[str, int] = {}
    for role, token_id in vocabulary.specials.items():
        name = ROLE_NAMES.get(role, role)
        if name.startswith("<") and name.endswith(">"):
            names.setdefault(name, int(token_id))
    image = vocabulary.blocks.get("image")
    if image is not None:
        names[BEGIN_IMAGE] = image.begin_id
        names[END_IMAGE] = image.end_id
        for code, token_id in enumerate(image.code_ids.tolist()):
            names[image_name(code)] = int(token_id)
    return names
