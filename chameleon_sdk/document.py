"""Documents: ordered segments of text, images and plugin modalities, with a JSONL format.

A :class:`Document` is canonical: adjacent text segments are merged and empty text is dropped,
so ``detokenize(tokenize(doc)) == doc`` is a plain equality. The JSONL format is specified in
``docs/formats.md``.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import PIL.Image

from chameleon_sdk.bounded_read import MAX_LINE_BYTES, open_regular
from chameleon_sdk.error_mapping import foreign_errors
from chameleon_sdk.errors import DocumentError, ImageDecodeError
from chameleon_sdk.image_io import PNG_MODES, open_image, to_rgb
from chameleon_sdk.payloads import modality_for_payload, payload_from_json, payload_to_json
from chameleon_sdk.storage.atomic_files import atomic_write_bytes, atomic_write_text

__all__ = ["Document", "Image", "Segment", "Text", "read_jsonl", "write_jsonl"]


def _instance_of(kind: type, what: str) -> Any:
    """An attrs validator raising :class:`DocumentError` (not attrs' bare TypeError)."""

    def check(instance: object, attribute: attrs.Attribute, value: Any) -> None:
        if not isinstance(value, kind):
            raise DocumentError(
                f"{type(instance).__name__}.{attribute.name} must be {what}, got {type(value).__name__}: {value!r:.60}"
            )

    return check


def _unicode(instance: object, attribute: attrs.Attribute, value: str) -> None:
    """Text must be writable as UTF-8: a lone surrogate (``"a\\ud800"``) would fail only later, in a
    tokenizer or while writing a file."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DocumentError(
            f"Text.text holds a lone surrogate {value[exc.start]!r} at position {exc.start}: not valid Unicode text"
        ) from None


@attrs.frozen
class Text:
    """A run of text."""

    text: str = attrs.field(validator=[_instance_of(str, "a str"), _unicode])
    modality = "text"

    @property
    def payload(self) -> str:
        return self.text


def _same_pixels(a: PIL.Image.Image, b: PIL.Image.Image) -> bool:
    return a.mode == b.mode and a.size == b.size and a.tobytes() == b.tobytes()


def _has_pixels(instance: object, attribute: attrs.Attribute, value: PIL.Image.Image) -> None:
    if value.width == 0 or value.height == 0:
        raise DocumentError(f"Image.image has no pixels ({value.width} x {value.height})")


@attrs.frozen(eq=False)
class Image:
    """A picture (a PIL image); equality compares mode, size and pixels."""

    image: PIL.Image.Image = attrs.field(validator=[_instance_of(PIL.Image.Image, "a PIL image"), _has_pixels])
    modality = "image"

    @property
    def payload(self) -> PIL.Image.Image:
        return self.image

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and _same_pixels(self.image, other.image)

    __hash__ = None  # type: ignore[assignment]


@attrs.frozen
class Segment:
    """A payload of a plugin modality, e.g. ``Segment("audio", waveform)``.

    ``Document.of(payload)`` builds one for a payload type the modality lists in ``payload_types``.
    In JSON the payload goes through the modality's ``payload_to_json``/``payload_from_json``
    (see :mod:`chameleon_sdk.payloads`); without them it must be JSON data itself.
    """

    modality: str = attrs.field(validator=_instance_of(str, "a modality name (str)"))
    payload: Any

    def __attrs_post_init__(self) -> None:
        if self.modality in ("text", "image"):
            raise DocumentError(f"use Text(...) or Image(...) for modality {self.modality!r}, not Segment")


AnySegment = Text | Image | Segment


def segment_of(modality: str, payload: Any) -> Image | Segment:
    """The segment holding a decoded payload: :class:`Image` for images, :class:`Segment` otherwise."""
    return Image(payload) if modality == "image" else Segment(modality, payload)


def _canonical(segments: Iterable[AnySegment]) -> tuple[AnySegment, ...]:
    if isinstance(segments, (str, bytes)) or not isinstance(segments, Iterable):
        raise DocumentError(
            f"Document: expected a sequence of Text, Image or Segment values, got {type(segments).__name__} "
            "(Document.of(...) builds one from plain strings and images)"
        )
    out: list[AnySegment] = []
    for seg in segments:
        if not isinstance(seg, (Text, Image, Segment)):
            raise DocumentError(f"a document holds Text, Image or Segment values, got {type(seg).__name__}")
        if isinstance(seg, Text):
            if not seg.text:
                continue
            if out and isinstance(out[-1], Text):
                out[-1] = Text(out[-1].text + seg.text)
                continue
        out.append(seg)
    return tuple(out)


@attrs.frozen
class Document:
    """An ordered, canonical sequence of segments."""

    segments: tuple[AnySegment, ...] = attrs.field(converter=_canonical, factory=tuple)

    @classmethod
    def of(cls, *items: Any) -> Document:
        """Build a document from plain values: ``str`` -> Text, PIL image -> Image, segments as-is, and a
        payload of a type a registered modality lists in its ``payload_types`` -> ``Segment(modality, payload)``."""
        segments: list[AnySegment] = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                segments.append(Text(item))
            elif isinstance(item, PIL.Image.Image):
                segments.append(Image(item))
            elif isinstance(item, (Text, Image, Segment)):
                segments.append(item)
            elif (modality := modality_for_payload(item)) is not None:
                segments.append(Segment(modality, item))
            else:
                raise DocumentError(
                    f"Document.of: item {i} is a {type(item).__name__}; expected str, PIL.Image.Image, a "
                    "Text/Image/Segment, or a payload type that a registered modality lists in payload_types"
                )
        return cls(segments)

    def __iter__(self) -> Iterator[AnySegment]:
        return iter(self.segments)

    def __len__(self) -> int:
        return len(self.segments)

    @property
    def text(self) -> str:
        """All text segments joined (other modalities omitted)."""
        return "".join(s.text for s in self.segments if isinstance(s, Text))

    # -- JSON ----------------------------------------------------------------------------------

    def to_json(self, *, base_dir: str | os.PathLike[str] | None = None, image_dir: str = "images") -> dict[str, Any]:
        """JSON data for this document.

        Images are inlined as base64 PNG unless ``base_dir`` is given, in which case each image is
        written to ``base_dir/image_dir/`` as a PNG named by its content hash and referenced by a
        path relative to ``base_dir``.
        """
        if base_dir is not None and not isinstance(base_dir, (str, os.PathLike)):
            raise DocumentError(f"Document.to_json: base_dir must be a path, got {base_dir!r}")
        out: list[dict[str, Any]] = []
        for seg in self.segments:
            if isinstance(seg, Text):
                out.append({"text": seg.text})
            elif isinstance(seg, Image):
                png = png_bytes(seg.image)
                if base_dir is None:
                    out.append({"image_base64": base64.b64encode(png).decode("ascii")})
                else:
                    out.append({"image": _write_image_file(png, Path(base_dir), image_dir)})
            else:
                payload = payload_to_json(seg.modality, seg.payload, where=f"segment {len(out)}")
                out.append({"modality": seg.modality, "payload": payload})
        return {"segments": out}

    @classmethod
    def from_json(
        cls, data: Any, *, base_dir: str | os.PathLike[str] | None = None, where: str = "document"
    ) -> Document:
        """Parse :meth:`to_json` data; image paths are resolved against ``base_dir``.

        The image-path policy: a path is relative and stays inside ``base_dir`` (the JSONL file's
        folder, unless ``read_jsonl(..., base_dir=...)`` names another); an absolute path, or one that
        leaves the folder (``../``, a symlink pointing out), is a :class:`DocumentError`. A dataset from
        elsewhere thus cannot make the SDK read arbitrary files of the machine.
        """
        if not isinstance(data, dict) or not isinstance(data.get("segments"), list):
            raise DocumentError(f"{where}: expected an object with a 'segments' list")
        segments: list[AnySegment] = []
        for i, raw in enumerate(data["segments"]):
            here = f"{where}, segment {i}"
            if not isinstance(raw, dict):
                raise DocumentError(f"{here}: expected an object, got {raw!r:.60}")
            keys = set(raw)
            if keys == {"text"} and isinstance(raw["text"], str):
                segments.append(Text(raw["text"]))
            elif keys == {"image"} and isinstance(raw["image"], str):
                if base_dir is None:
                    raise DocumentError(f"{here}: an image path needs a base directory to resolve against")
                segments.append(Image(_open_image(_inside(Path(base_dir), raw["image"], here), here)))
            elif keys == {"image_base64"} and isinstance(raw["image_base64"], str):
                try:
                    data_bytes = base64.b64decode(raw["image_base64"], validate=True)
                except ValueError as exc:
                    raise ImageDecodeError(f"{here}: image_base64 is not valid base64: {exc}") from exc
                segments.append(Image(_decode_image(data_bytes, here)))
            elif keys == {"modality", "payload"} and isinstance(raw["modality"], str):
                payload = payload_from_json(raw["modality"], raw["payload"], where=here)
                try:
                    segments.append(Segment(raw["modality"], payload))
                except DocumentError as exc:
                    raise DocumentError(f"{here}: {exc}") from exc
            else:
                raise DocumentError(
                    f"{here}: expected one of {{'text'}}, {{'image'}}, {{'image_base64'}} or "
                    f"{{'modality', 'payload'}}, got keys {sorted(keys)}"
                )
        return cls(segments)


def png_bytes(image: PIL.Image.Image) -> bytes:
    """The image as a PNG file; a mode PNG cannot hold (CMYK, F, LAB, HSV, YCbCr...) is written as RGB."""
    if image.mode not in PNG_MODES:
        image = to_rgb(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _write_image_file(png: bytes, base_dir: Path, image_dir: str) -> str:
    import hashlib

    rel = Path(image_dir) / f"{hashlib.sha256(png).hexdigest()[:16]}.png"
    target = base_dir / rel
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, png)
    return rel.as_posix()


def _decode_image(data: bytes, where: str) -> PIL.Image.Image:
    """Decode through :func:`open_image`: typed errors, a pixel limit, the first frame of animations."""
    try:
        return open_image(data, name=where)
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"{where}: cannot decode image: {exc}") from exc


def _inside(base_dir: Path, name: str, where: str) -> Path:
    """``base_dir / name``, refused when ``name`` is absolute or resolves outside ``base_dir``."""
    relative = Path(name)
    if relative.is_absolute() or not name:
        raise DocumentError(f"{where}: image path {name!r} must be relative to the JSONL's folder {str(base_dir)!r}")
    path = base_dir / relative
    try:
        path.resolve().relative_to(base_dir.resolve())
    except (ValueError, OSError, RuntimeError):
        raise DocumentError(
            f"{where}: image path {name!r} leaves the base directory {str(base_dir)!r} (the image-path policy: "
            "relative paths inside it; read_jsonl(base_dir=...) names another)"
        ) from None
    return path


def _open_image(path: Path, where: str) -> PIL.Image.Image:
    try:
        return open_image(path, name=f"{where} ({path})")
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"{where}: {exc}") from exc


def write_jsonl(
    documents: Iterable[Document],
    path: str | os.PathLike[str],
    *,
    images: str = "base64",
    image_dir: str = "images",
) -> None:
    """Write documents as JSONL, one per line, atomically.

    :param images: ``"base64"`` inlines PNGs; ``"files"`` writes them under ``image_dir`` next to
        the JSONL file and stores relative paths.
    """
    if images not in ("base64", "files"):
        raise DocumentError(f"write_jsonl: images must be 'base64' or 'files', got {images!r}")
    path = _path(path, "write_jsonl")
    if isinstance(documents, (str, bytes, Document)) or not isinstance(documents, Iterable):
        raise DocumentError(f"write_jsonl: expected an iterable of Documents, got {type(documents).__name__}")
    base = path.parent if images == "files" else None
    lines = []
    for i, doc in enumerate(documents):
        if not isinstance(doc, Document):
            raise DocumentError(f"write_jsonl: item {i} is a {type(doc).__name__}, not a Document")
        try:
            lines.append(json.dumps(doc.to_json(base_dir=base, image_dir=image_dir), ensure_ascii=False))
        except (TypeError, ValueError) as exc:
            raise DocumentError(
                f"write_jsonl: document {i} has a segment payload that is not JSON-serialisable: {exc}"
            ) from exc
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def _path(path: Any, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise DocumentError(f"{what}: expected a file path, got {path!r}")
    return Path(path)


def jsonl_lines(
    path: str | os.PathLike[str], *, what: str = "JSONL file", max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[str, bytes]]:
    """``(where, line)`` for every non-blank line (its raw bytes), ``where`` being ``FILE:LINE``.

    Only a regular file is read (not ``/dev/zero``, not a FIFO). A line longer than
    ``max_line_bytes`` is skipped over without being held in memory and yielded as ``b""`` plus the
    rest, for :func:`parse_json_line` to refuse; each line is decoded on its own, so one bad line does
    not spoil the file.
    """
    path = _path(path, "reading JSONL")
    with open_regular(path, what=what, error=DocumentError) as handle:
        lineno = 0
        while line := handle.readline(max_line_bytes + 1):
            lineno += 1
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                while (rest := handle.readline(max_line_bytes)) and not rest.endswith(b"\n"):
                    pass
                yield f"{path}:{lineno}", _TOO_LONG
            elif line.strip():
                yield f"{path}:{lineno}", line


#: what :func:`jsonl_lines` yields for a line over the length limit
_TOO_LONG = b"\x00too long"


def parse_json_line(where: str, line: bytes | str) -> Any:
    """Decode (UTF-8) and parse one JSONL line; :class:`DocumentError` naming ``where`` otherwise."""
    if line == _TOO_LONG:
        raise DocumentError(f"{where}: the line is longer than {MAX_LINE_BYTES} bytes")
    try:
        with foreign_errors(where, DocumentError):
            text = line.decode("utf-8") if isinstance(line, bytes) else line
            return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from exc


def read_jsonl(path: str | os.PathLike[str], *, base_dir: str | os.PathLike[str] | None = None) -> Iterator[Document]:
    """Read documents from JSONL; errors name the file and the line. Blank lines are skipped.

    :param base_dir: the folder image paths are relative to and must stay inside (default: the JSONL
        file's folder); see :meth:`Document.from_json` for the policy.
    """
    base = _path(path, "read_jsonl").parent if base_dir is None else _path(base_dir, "read_jsonl base_dir")
    for where, line in jsonl_lines(path):
        yield Document.from_json(parse_json_line(where, line), base_dir=base, where=where)
