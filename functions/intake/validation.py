"""Decide, from the bytes alone, whether an upload is an image the GPU worker can upscale.

Pure functions (no AWS), in the order intake runs them, cheapest first:
  1. `sniff_format` + `read_header`: format and dimensions from the first bytes (a ranged GET).
     Our own small parsers, not Pillow: Pillow's WebP plugin reads the whole file and allocates
     the canvas on open, and its JPEG plugin cannot tell "need more bytes" from "corrupt".
     HEIC/AVIF/TIFF headers: container_headers.py, which may ask for a range far into the file.
  2. `check_header`: size, pixel, side, output and animation limits, before anything is decoded.
     A small file that declares a huge image is refused here without allocating it.
  3. `decode_check`: the full decode (Pillow `load()`, PNG chunk CRCs) within a memory bound, so
     truncated and corrupt files are refused here and not on the GPU.
`validate_bytes` runs all three on a whole file (the CLI and intake's last step).
The file name and Content-Type are never consulted.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from PIL import Image

from common.contract import JobOptions, OutputFormat, RejectionCode
from common.formats import OUTPUT_MAX_PIXELS, OUTPUT_MAX_SIDE, default_output_format, output_size
from common.heif import register_heif_opener
from common.image_bounds import DecodeCostExceeded, decode_cost_problem
from common.image_metadata import read_exif
from common.settings import Settings

from . import container_headers as containers

ACCEPTED_FORMATS = ("jpeg", "png", "webp", "heic", "avif", "tiff")
_PIL_FORMAT = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "heic": "HEIF", "avif": "AVIF", "tiff": "TIFF"}
_DISPLAY_NAME = {"jpeg": "JPEG", "png": "PNG", "webp": "WebP", "heic": "HEIC", "avif": "AVIF", "tiff": "TIFF"}
# What several images in one file are called in the sentences (animated WebP/PNG/AVIF, TIFF pages, HEIC bursts).
_FRAME_WORD = {"tiff": "pages", "heic": "images"}
# Declared decoded bytes per stored byte above which an over-limit image is called a bomb:
# real photos compress ~5-50x, flat graphics rarely beyond a few hundred.
BOMB_RATIO = 1_000

_SUPPORTED = "Upload a JPEG, PNG, WebP, HEIC, AVIF or TIFF image."
_DESCRIPTIONS = {
    "gif": "a GIF image; GIF is not supported, convert it to PNG",
    "bmp": "a BMP image; BMP is not supported, convert it to PNG",
    "jxl": "a JPEG XL image; export it as JPEG or PNG",
    "video": "a video (MP4/QuickTime), not a still image",
    "ico": "an icon file",
    "psd": "a Photoshop document; export it as PNG or JPEG",
    "pdf": "a PDF document, not an image",
    "svg": "an SVG drawing (vector graphics need no upscaling; export it as PNG if you want a raster)",
    "html": "an HTML page, not an image",
    "zip": "a ZIP archive, not an image",
    "text": "a text file, not an image",
    "unknown": "not a recognisable image",
}


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What the first bytes of an accepted-format file declare."""

    format: str  # one of ACCEPTED_FORMATS
    width: int
    height: int
    bits_per_sample: int = 8
    channels: int = 3
    animated: bool = False  # more than one frame (animation, image sequence, burst, TIFF pages)
    frames: int | None = 1  # None: animated, count not known from the bytes read
    work_pixels: int = 0  # pixels a decoder buffers beyond width x height (HEIF grid tiles, TIFF tiles)


@dataclass(frozen=True, slots=True)
class NeedMoreBytes:
    """The header did not fit in the bytes given; read at least `at_least` bytes from the start.

    `offset` > 0: the header continues far from the start (a TIFF IFD after the pixel data, an ISOBMFF
    box after `mdat`): reading [offset, at_least) is enough; pass it to `read_header` in `far`.
    """

    at_least: int
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of validation: accepted, or refused with a code and a sentence for a person."""

    accepted: bool
    code: RejectionCode | None = None
    message: str = ""
    format: str | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    mode: str | None = None
    orientation: int | None = None  # EXIF orientation (the engine applies it)
    output_format: str | None = None
    output_width: int | None = None
    output_height: int | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["code"] = str(self.code) if self.code else None
        data["warnings"] = list(self.warnings)
        return data


def reject(code: RejectionCode, message: str, header: ImageHeader | None = None, **extra: Any) -> Verdict:
    if header is not None:
        extra = {"format": header.format, "width": header.width, "height": header.height,
                 "frames": header.frames, **extra}
    return Verdict(accepted=False, code=code, message=message, **extra)


# --- 1. format and header ---------------------------------------------------------------------


def sniff_format(head: bytes) -> str:
    """The kind of file from its first bytes: an accepted format, another image kind, or not an image."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic TIFF, BigTIFF
        return "tiff"
    if head[:2] == b"BM":
        return "bmp"
    if head[4:8] == b"ftyp":
        # A generic HEIF (mif1) counts as HEIC until its primary item's codec says otherwise.
        kind = containers.isobmff_kind(head)
        return "video" if kind is None else "heic" if kind == "heif" else kind
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "jxl"
    if head[:4] == b"\x00\x00\x01\x00":
        return "ico"
    if head[:4] == b"8BPS":
        return "psd"
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    return _sniff_text(head)


def _sniff_text(head: bytes) -> str:
    sample = head[:4096]
    try:
        text = sample.decode("utf-8-sig")
    except UnicodeDecodeError:
        # A multi-byte character cut at the sample's end is still text.
        try:
            text = sample[:-3].decode("utf-8-sig")
        except UnicodeDecodeError:
            return "unknown"
    lowered = text.lstrip().lower()
    if "<svg" in lowered[:2048] and (lowered.startswith("<svg") or lowered.startswith("<?xml")
                                    or lowered.startswith("<!doctype svg") or lowered.startswith("<!--")):
        return "svg"
    if lowered.startswith("<!doctype html") or lowered.startswith("<html") or "<html" in lowered[:1024]:
        return "html"
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return "text" if text and printable / len(text) > 0.95 else "unknown"


def read_header(head: bytes, *, complete: bool, far: Mapping[int, bytes] | None = None,
                size: int | None = None) -> ImageHeader | NeedMoreBytes | Verdict:
    """Parse dimensions from the first bytes. `complete`: `head` is the whole file.

    `far`: ranges read further into the file (offset -> bytes) after a `NeedMoreBytes` with an offset;
    `size`: the file's size when known (HEIF/TIFF pointers past it are corrupt).
    Returns the header, a request for more bytes, or a rejection (unsupported or corrupt).
    """
    if not head:
        return reject(RejectionCode.EMPTY_FILE, "The file is empty.")
    kind = sniff_format(head)
    if kind not in ACCEPTED_FORMATS:
        if len(head) < 16 and not complete:
            return NeedMoreBytes(16)
        return reject(RejectionCode.UNSUPPORTED_FORMAT, f"This file is {_DESCRIPTIONS[kind]}. {_SUPPORTED}",
                      format=kind)
    if kind in ("heic", "avif", "tiff"):
        return _container_header(kind, containers.ByteWindow(head, far, len(head) if complete else size))
    parser = {"jpeg": _jpeg_header, "png": _png_header, "webp": _webp_header}[kind]
    try:
        found = parser(head, complete)
    except _Corrupt as exc:
        return reject(RejectionCode.CORRUPT_IMAGE, f"The {_DISPLAY_NAME[kind]} header is damaged: {exc}.", format=kind)
    if isinstance(found, NeedMoreBytes) and complete:
        return reject(RejectionCode.CORRUPT_IMAGE,
                      f"The {_DISPLAY_NAME[kind]} file ends before its header is complete (truncated upload?).",
                      format=kind)
    if isinstance(found, ImageHeader) and (excess := decode_cost_problem(head)) is not None:
        return too_costly(excess, found)
    return found


def too_costly(excess: DecodeCostExceeded, header: ImageHeader | None = None) -> Verdict:
    """Refused before decoding: more scans/chunks than any real image (common/image_bounds.py)."""
    return reject(RejectionCode.DECODE_TOO_COSTLY, excess.sentence(), header)


class _Corrupt(ValueError):
    pass


def _container_header(kind: str, window: containers.ByteWindow) -> ImageHeader | NeedMoreBytes | Verdict:
    """HEIC/AVIF/TIFF: the parsers in container_headers.py, their answers in this module's terms."""
    parse = containers.parse_tiff if kind == "tiff" else containers.parse_isobmff
    try:
        facts = parse(window)
    except containers.NeedBytes as need:
        return NeedMoreBytes(need.offset + need.length, offset=need.offset)
    except containers.UnsupportedFeature as exc:
        return reject(RejectionCode.UNSUPPORTED_FORMAT, str(exc), format=kind)
    except (containers.ContainerError, struct.error) as exc:
        return reject(RejectionCode.CORRUPT_IMAGE, f"The {_DISPLAY_NAME[kind]} header is damaged: {exc}.", format=kind)
    return ImageHeader(facts.format, facts.width, facts.height, bits_per_sample=facts.bits_per_sample,
                       channels=facts.channels, animated=facts.frames > 1, frames=facts.frames,
                       work_pixels=facts.work_pixels)


_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def _jpeg_header(data: bytes, complete: bool) -> ImageHeader | NeedMoreBytes:
    """Walk the marker segments (APPn EXIF/ICC can be large) up to the frame header (SOFn)."""
    pos = 2
    while True:
        # Markers are 0xFF followed by a code; any number of 0xFF fill bytes may precede the code.
        while pos < len(data) and data[pos] == 0xFF:
            pos += 1
        if pos >= len(data):
            return NeedMoreBytes(pos + 4)
        if data[pos - 1] != 0xFF:
            raise _Corrupt(f"expected a marker at byte {pos - 1}")
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):
            raise _Corrupt("image data starts before the frame header")
        if pos + 2 > len(data):
            return NeedMoreBytes(pos + 2)
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2:
            raise _Corrupt("segment length below 2")
        if marker in _JPEG_SOF:
            if pos + 8 > len(data):
                return NeedMoreBytes(pos + 8)
            precision, height, width, components = struct.unpack_from(">BHHB", data, pos + 2)
            if width == 0 or height == 0:
                raise _Corrupt("frame header declares a zero dimension")
            return ImageHeader("jpeg", width, height, bits_per_sample=16 if precision > 8 else 8,
                               channels=components)
        pos += length


_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # by colour type; palette expands to RGB


def _png_header(data: bytes, complete: bool) -> ImageHeader | NeedMoreBytes:
    """IHDR (always first), then the chunks before IDAT, where an APNG's acTL must appear."""
    if len(data) < 33:
        return NeedMoreBytes(33)
    length, ctype = struct.unpack_from(">I4s", data, 8)
    if ctype != b"IHDR" or length != 13:
        raise _Corrupt("IHDR is not the first chunk")
    if zlib.crc32(data[12:29]) != struct.unpack_from(">I", data, 29)[0]:
        raise _Corrupt("IHDR checksum mismatch")
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    if width == 0 or height == 0 or colour not in _PNG_CHANNELS:
        raise _Corrupt("IHDR declares an impossible image")
    header = ImageHeader("png", width, height, bits_per_sample=16 if depth == 16 else 8,
                         channels=_PNG_CHANNELS[colour])
    pos = 33
    while True:
        if pos + 8 > len(data):
            return NeedMoreBytes(pos + 8)
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if ctype in (b"IDAT", b"IEND"):
            return header
        if ctype == b"acTL":
            if pos + 12 > len(data):
                return NeedMoreBytes(pos + 12)
            (frames,) = struct.unpack_from(">I", data, pos + 8)
            return replace(header, animated=frames > 1, frames=frames)
        if ctype == b"tRNS":
            header = replace(header, channels=max(header.channels, 4 if header.channels >= 3 else 2))
        pos += 12 + length


def _webp_header(data: bytes, complete: bool) -> ImageHeader | NeedMoreBytes:
    if len(data) < 30:
        return NeedMoreBytes(30)
    fourcc = data[12:16]
    if fourcc == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise _Corrupt("VP8 start code missing")
        width, height = (v & 0x3FFF for v in struct.unpack_from("<HH", data, 26))
        return _webp(width, height, channels=3)
    if fourcc == b"VP8L":
        if data[20] != 0x2F:
            raise _Corrupt("VP8L signature missing")
        (bits,) = struct.unpack_from("<I", data, 21)
        return _webp(1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF), channels=4 if bits >> 28 & 1 else 3)
    if fourcc == b"VP8X":
        flags = data[20]
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        animated = bool(flags & 0x02)
        frames = _count_webp_frames(data) if animated and complete else (None if animated else 1)
        return _webp(width, height, channels=4 if flags & 0x10 else 3, animated=animated, frames=frames)
    raise _Corrupt(f"unknown WebP chunk {fourcc!r}")


def _webp(width: int, height: int, **kwargs: Any) -> ImageHeader:
    if width == 0 or height == 0:
        raise _Corrupt("zero dimension")
    return ImageHeader("webp", width, height, **kwargs)


def _count_webp_frames(data: bytes) -> int:
    pos, frames = 12, 0
    while pos + 8 <= len(data):
        fourcc, length = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        frames += fourcc == b"ANMF"
        pos += 8 + length + (length & 1)
    return frames


# --- 2. limits, before any decode ---------------------------------------------------------------


def decoded_bytes_estimate(header: ImageHeader) -> int:
    """Memory a full decode needs: Pillow keeps multi-band pixels in 4 bytes, 16-bit samples doubled."""
    per_pixel = (1 if header.channels == 1 else 4) * (2 if header.bits_per_sample > 8 else 1)
    return max(header.width * header.height, header.work_pixels) * per_pixel


def resolve_output_format(header: ImageHeader, options: JobOptions) -> OutputFormat:
    """The requested format, else "same as the input" (HEIC: JPEG, or PNG for alpha / more than 8 bits)."""
    return options.output_format or default_output_format(
        header.format, has_alpha=header.channels in (2, 4), bit_depth=header.bits_per_sample)


def check_header(header: ImageHeader, *, file_size: int, options: JobOptions, settings: Settings) -> Verdict:
    """Every limit that the declared dimensions decide. Nothing is decoded or allocated."""
    w, h, pixels = header.width, header.height, header.width * header.height
    dims = f"{w}×{h}"
    if min(w, h) < settings.min_input_side:
        return reject(RejectionCode.IMAGE_TOO_SMALL,
                      f"The image is {dims} pixels; each side must be at least {settings.min_input_side}.", header)
    if header.work_pixels > max(4 * pixels, settings.max_input_pixels):
        # Tiles far larger than the image they make up (a HEIF grid, TIFF tiles): only a bomb does that.
        return reject(RejectionCode.DECOMPRESSION_BOMB,
                      f"The {dims} image declares tiles of {header.work_pixels / 1e6:,.0f} MP in all; refused "
                      "without decoding it.", header)
    declared = decoded_bytes_estimate(header)
    over_limit = (pixels > settings.max_input_pixels or max(w, h) > settings.max_input_side
                  or declared > settings.decode_memory_limit_bytes)
    if over_limit and declared >= BOMB_RATIO * max(file_size, 1):
        return reject(RejectionCode.DECOMPRESSION_BOMB,
                      f"The file is only {_size(file_size)} but declares a {dims} image ({pixels / 1e6:,.0f} MP, "
                      f"{_size(declared)} once decoded); refused without decoding it.", header)
    if max(w, h) > settings.max_input_side:
        return reject(RejectionCode.SIDE_TOO_LONG,
                      f"The image is {dims} pixels; no side may exceed {settings.max_input_side}.", header)
    if pixels > settings.max_input_pixels:
        return reject(RejectionCode.TOO_MANY_PIXELS,
                      f"The image has {pixels / 1e6:.1f} MP ({dims}); the limit is "
                      f"{settings.max_input_pixels / 1e6:.1f} MP. Resize it and upload again.", header)
    if declared > settings.decode_memory_limit_bytes:
        return reject(RejectionCode.TOO_MANY_PIXELS,
                      f"Decoding this {dims} image needs {_size(declared)}, more than the "
                      f"{_size(settings.decode_memory_limit_bytes)} allowed.", header)

    notes: list[str] = []
    if header.animated:
        word = _FRAME_WORD.get(header.format, "frames")
        count = f"{header.frames} {word}" if header.frames else f"several {word}"
        what = {"tiff": f"The TIFF has {count}", "heic": f"The HEIC file holds {count} (a burst or sequence)"}.get(
            header.format, f"The image is animated ({count})")
        first = "page" if header.format == "tiff" else "image" if header.format == "heic" else "frame"
        if not settings.accept_animated_first_frame:
            return reject(RejectionCode.ANIMATED_IMAGE,
                          f"{what}; only single still images can be upscaled. "
                          f"Upload a single {first} as PNG or JPEG.", header)
        notes.append(f"{what.replace('The image is', 'The upload is')}; only the first {first} was upscaled.")

    out_format = resolve_output_format(header, options)
    out_w, out_h = output_size(w, h, options.scale)
    out_dims: dict[str, Any] = {"output_format": str(out_format), "output_width": out_w, "output_height": out_h}
    if out_w * out_h > settings.max_output_pixels:
        return reject(RejectionCode.OUTPUT_TOO_LARGE,
                      f"At {options.scale:g}x the {dims} image would become {out_w}×{out_h} "
                      f"({out_w * out_h / 1e6:.0f} MP); the output limit is {settings.max_output_pixels / 1e6:.0f} MP. "
                      "Choose a smaller x-amz-meta-scale.", header, **out_dims)
    max_side = OUTPUT_MAX_SIDE[out_format]
    if max(out_w, out_h) > max_side:
        return reject(RejectionCode.OUTPUT_TOO_LARGE,
                      f"At {options.scale:g}x the {dims} image would become {out_w}×{out_h}, but "
                      f"{_DISPLAY_NAME[out_format.value]} cannot store a side longer than {max_side}. "
                      "Choose a smaller x-amz-meta-scale or x-amz-meta-format: png.", header, **out_dims)
    max_pixels = OUTPUT_MAX_PIXELS.get(out_format)
    if max_pixels is not None and out_w * out_h > max_pixels:
        return reject(RejectionCode.OUTPUT_TOO_LARGE,
                      f"At {options.scale:g}x the {dims} image would become {out_w}×{out_h} "
                      f"({out_w * out_h / 1e6:.0f} MP), more than {_DISPLAY_NAME[out_format.value]} can encode "
                      f"({max_pixels / 1e6:.0f} MP). Choose a smaller x-amz-meta-scale or x-amz-meta-format: "
                      "jpeg or png.", header, **out_dims)
    return Verdict(accepted=True, format=header.format, width=w, height=h, frames=header.frames,
                   warnings=tuple(notes), **out_dims)


# --- 3. full decode ------------------------------------------------------------------------------


# HEVC and AV1 decode in seconds what JPEG decodes in a tenth: intake checks their container (every box,
# every item's data inside the file, so a truncation is caught) and the codec's parse, not the pixels.
# A damaged bitstream inside an intact file is the worker's UNDECODABLE_IMAGE, before any inference.
HEADER_CHECKED_ONLY = frozenset({"heic", "avif"})


def decode_check(data: bytes, verdict: Verdict) -> Verdict:
    """Decode the whole (first frame of the) image; a header-accepted verdict stays accepted only if it decodes.

    `verdict` must come from `check_header`, which already bounded the memory this needs.
    """
    fmt = verdict.format or ""
    if (excess := decode_cost_problem(data)) is not None:  # before the chunk walk and the decode
        return replace(verdict, accepted=False, code=RejectionCode.DECODE_TOO_COSTLY, message=excess.sentence())
    if fmt == "png" and (problem := png_chunk_problem(data)):
        return replace(verdict, accepted=False, code=RejectionCode.CORRUPT_IMAGE,
                       message=f"The PNG file is damaged: {problem}.")
    if fmt == "heic":
        register_heif_opener()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # our limits are stricter than Pillow's bomb warning
            with Image.open(io.BytesIO(data), formats=[_PIL_FORMAT[fmt]]) as img:
                if img.size != (verdict.width, verdict.height):
                    verdict = _cropped(verdict, img.size)
                # JPEG MPO extras aren't frames; TIFF thumbnails and HEIF tiles/aux images neither (the
                # header parsers count what a viewer shows).
                frames = int(getattr(img, "n_frames", 1)) if fmt in ("png", "webp") else verdict.frames
                if fmt not in HEADER_CHECKED_ONLY:
                    img.load()
                mode = img.mode
                orientation = read_exif(img).orientation  # 1..8; broken EXIF never raises (the worker warns)
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError, struct.error, zlib.error,
            Image.DecompressionBombError) as exc:  # RuntimeError: libheif's errors via pillow-heif
        return replace(verdict, accepted=False, code=RejectionCode.CORRUPT_IMAGE,
                       message=f"The {_DISPLAY_NAME[fmt]} image cannot be decoded; the file is truncated or damaged "
                               f"({_reason(exc)}).")
    return replace(verdict, frames=frames if frames else verdict.frames, mode=mode,
                   orientation=orientation)


def _cropped(verdict: Verdict, size: tuple[int, int]) -> Verdict:
    """A HEIF/AVIF clean aperture (clap) crops the declared size a little; anything else is a lie."""
    w, h = size
    if verdict.format not in ("heic", "avif") or not (0 < w <= (verdict.width or 0) and 0 < h <= (verdict.height or 0)):
        raise ValueError(f"decoder sees {w}×{h}, header says {verdict.width}×{verdict.height}")
    out_w, out_h = verdict.output_width or w, verdict.output_height or h
    return replace(verdict, width=w, height=h, output_width=max(1, round(out_w * w / (verdict.width or w))),
                   output_height=max(1, round(out_h * h / (verdict.height or h))))


def png_chunk_problem(data: bytes) -> str | None:
    """Check every chunk's CRC and that the file ends with IEND (Pillow does not check IDAT CRCs)."""
    pos = 8
    while pos + 12 <= len(data):
        length, ctype = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data):
            return f"the {ctype.decode('latin-1')!s} chunk is cut short (truncated upload?)"
        if zlib.crc32(data[pos + 4:end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            return f"checksum mismatch in the {ctype.decode('latin-1')} chunk at byte {pos}"
        if ctype == b"IEND":
            return None
        pos = end
    return "the file ends before the IEND chunk (truncated upload?)"


def validate_bytes(data: bytes, *, options: JobOptions, settings: Settings) -> Verdict:
    """The whole validation of a complete file: size, header, limits, then the full decode."""
    if not data:
        return reject(RejectionCode.EMPTY_FILE, "The file is empty.")
    if len(data) > settings.max_upload_bytes:
        return file_too_large(len(data), settings)
    header = read_header(data, complete=True, size=len(data))
    if isinstance(header, Verdict):
        return header
    assert isinstance(header, ImageHeader)  # complete=True never asks for more
    verdict = check_header(header, file_size=len(data), options=options, settings=settings)
    return decode_check(data, verdict) if verdict.accepted else verdict


def file_too_large(size: int, settings: Settings) -> Verdict:
    return reject(RejectionCode.FILE_TOO_LARGE,
                  f"The file is {_size(size)}; the limit is {_size(settings.max_upload_bytes)}.")


def _size(n: int) -> str:
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:,.1f} {unit}"
    return f"{n} bytes"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]
