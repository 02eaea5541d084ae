"""Decode any input into a normalized picture and encode the result, keeping what makes it the same photo.

Decoding applies EXIF orientation (and resets the tag to 1), keeps ICC profile and EXIF, separates
alpha, keeps grayscale as grayscale and 16-bit PNG as 16 bits (Pillow would truncate 16-bit RGB to
8 bits, so those are read and written with pypng), converts CMYK through its ICC profile when it
has one, and expands palettes (with their transparency). HEIC (pillow-heif), AVIF and TIFF come in
through Pillow too; where Pillow would drop bits (10-bit HEIC, 16-bit RGB TIFF) and to write AVIF and TIFF,
formats_io.py takes over. XMP travels with ICC and EXIF.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np
import png  # pypng
from PIL import Image, ImageCms, PngImagePlugin, UnidentifiedImageError

from common.contract import OutputFormat
from common.formats import OUTPUT_MAX_PIXELS, OUTPUT_MAX_SIDE, default_output_format
from common.heif import register_heif_opener
from common.image_bounds import decode_cost_problem
from common.image_metadata import UPRIGHT, exif_for_format, read_exif, upright_exif_bytes

from . import formats_io
from .errors import OutputNotEncodableError, UndecodableImageError

ORIENTATION_TAG = 0x0112
FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "HEIF": "heic", "AVIF": "avif", "TIFF": "tiff"}
# The formats the engine writes (HEIC is read only: see common.formats.default_output_format).
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "avif": "image/avif",
                 "tiff": "image/tiff"}
XMP_ITXT_KEYWORD = b"XML:com.adobe.xmp"  # PNG's place for XMP (an uncompressed iTXt chunk)
JPEG_MAX_XMP_BYTES = 65_000  # one APP1 segment, less its namespace header (extended XMP is not written)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Encoder effort for a GPU host, where the encode of one image runs beside the next image's forward and must
# not fall behind it: each setting costs a third to a sixth of the CPU of the one before for a few percent more
# bytes (benchmarks/encoder_effort.py; the table is in docs/engine.md). JPEG's Huffman optimisation also holds
# every DCT coefficient of the image (and Pillow a 2-bytes-per-pixel output buffer) until it ends.
PNG_COMPRESS_LEVEL = 1
WEBP_METHOD = 1
JPEG_OPTIMIZE = False
# WebP keeps every macroblock's modes in its first partition, at most 512 KB (libwebp's "encoding error 6",
# partition 0 overflow); the faster methods spend more of it. Measured on photo-like content at quality 95:
# method 1 fails at 67 MP, method 2 at 151 MP; methods 3 and 4 pass 151 MP and fail at 206 MP. Larger
# outputs therefore use slower methods, and an overflow is retried once with WEBP_SAFE_METHOD.
WEBP_METHOD_ABOVE = ((64_000_000, 3), (32_000_000, 2))  # (output pixels, method) for outputs larger than that
WEBP_SAFE_METHOD = 3
_WEBP_OVERFLOW = "encoding error 6"


@dataclass(slots=True)
class Picture:
    """Pixels as floats 0..1, HxWxC with C = 1 (gray) or 3 (RGB), plus what must survive the upscale."""

    pixels: np.ndarray
    alpha: np.ndarray | None  # HxW float32 0..1, None when fully opaque by construction
    bit_depth: int  # 8 or 16: the output keeps it
    source_format: str | None  # "jpeg" | "png" | "webp" | other lower-case PIL name | None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    warnings: list[str] = field(default_factory=list)
    xmp: bytes | None = None

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def is_gray(self) -> bool:
        return self.pixels.shape[2] == 1


def _open(data: bytes) -> Image.Image:
    if not data:
        raise UndecodableImageError("input is empty")
    if (excess := decode_cost_problem(data)) is not None:  # bounded before any decoding starts
        raise UndecodableImageError(excess.sentence())
    if data[4:8] == b"ftyp":
        register_heif_opener()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
            getattr(image, "n_frames", 1)  # a TIFF walks its page list here: a broken one fails now, clearly
    except UnidentifiedImageError:
        raise UndecodableImageError("not a recognised image format (or a truncated file)") from None
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, RuntimeError, Image.DecompressionBombWarning,
            Image.DecompressionBombError, struct.error, zlib.error) as exc:  # Runtime: libheif/libavif; Type: TIFF
        raise UndecodableImageError(f"cannot decode image: {exc}") from exc
    return image


def _exif_upright(image: Image.Image, notes: list[str]) -> tuple[Image.Image, bytes | None]:
    """Pixels upright and the EXIF to keep; broken metadata is dropped or repaired with a note, never raised."""
    found = read_exif(image)
    upright = image.transpose(UPRIGHT[found.orientation]) if found.orientation in UPRIGHT else image
    exif, dropped = upright_exif_bytes(found.exif)
    notes.extend(found.warnings + dropped)
    return upright, exif


def _orient_array(array: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation 1..8 applied to an HxW[xC] array (same result as ImageOps.exif_transpose)."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: np.swapaxes(a, 0, 1), 6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
           7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1], 8: lambda a: np.swapaxes(a, 0, 1)[::-1]}
    return np.ascontiguousarray(ops[orientation](array)) if orientation in ops else array


def _png_is_16bit(data: bytes) -> bool:
    return data.startswith(PNG_SIGNATURE) and len(data) > 24 and data[12:16] == b"IHDR" and data[24] == 16


def _decode_png16(data: bytes, image: Image.Image) -> Picture:
    try:
        width, height, rows, info = png.Reader(bytes=data).asDirect()
        samples = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    except png.Error as exc:
        raise UndecodableImageError(f"cannot decode 16-bit PNG: {exc}") from exc
    planes = info["planes"]
    array = samples.reshape(height, width, planes).astype(np.float32) / 65535.0
    found = read_exif(image)
    array = _orient_array(array, found.orientation)
    exif_bytes, dropped = upright_exif_bytes(found.exif)
    has_alpha = info.get("alpha", False)
    color = array[..., : planes - 1] if has_alpha else array
    alpha = array[..., planes - 1] if has_alpha else None
    return Picture(np.ascontiguousarray(color), alpha, 16, "png", image.info.get("icc_profile"), exif_bytes,
                   [*found.warnings, *dropped])


def _cmyk_to_rgb(image: Image.Image, warnings_out: list[str]) -> tuple[Image.Image, bytes | None]:
    icc = image.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(image, source, srgb, outputMode="RGB",
                                                  renderingIntent=ImageCms.Intent.PERCEPTUAL)
            if converted is not None:
                return converted, ImageCms.ImageCmsProfile(srgb).tobytes()
        except (ImageCms.PyCMSError, OSError) as exc:
            warnings_out.append(f"CMYK ICC profile unusable ({exc}); converted without colour management")
    return image.convert("RGB"), None


def decode(data: bytes) -> Picture:
    image = _open(data)
    picture = _decode_opened(data, image)
    xmp = image.info.get("xmp")
    picture.xmp = xmp if isinstance(xmp, bytes) and xmp else None
    return picture


def _decode_wide(data: bytes, image: Image.Image, source_format: str | None) -> Picture | None:
    """A >8-bit HEIC or 16-bit colour TIFF at 16 bits (Pillow's own path would reduce it to 8 bits)."""
    orientation = 1  # HEIF: libheif applied irot/imir already
    try:
        array = formats_io.heif_high_bit_depth(data, image)
        if array is None:
            found = formats_io.tiff_high_bit_depth(data, image)
            if found is None:
                return None
            array, orientation = found
    except (ValueError, RuntimeError, OSError, KeyError, MemoryError) as exc:  # libheif, tifffile, imagecodecs
        raise UndecodableImageError(f"cannot decode image: {exc}") from exc
    if source_format == "tiff":
        formats_io.keep_descriptive_exif(image)
    pixels = _orient_array(array.astype(np.float32) / 65535.0, orientation)
    exif_bytes, dropped = upright_exif_bytes(read_exif(image).exif)
    alpha = pixels[..., -1] if pixels.shape[2] in (2, 4) else None
    color = pixels[..., :-1] if alpha is not None else pixels
    return Picture(np.ascontiguousarray(color), alpha, 16, source_format, image.info.get("icc_profile"),
                   exif_bytes, list(dropped))


def _decode_opened(data: bytes, image: Image.Image) -> Picture:
    source_format = (image.format or "").lower() or None
    source_format = FORMATS.get(image.format or "", source_format)
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    if _png_is_16bit(data):
        return _decode_png16(data, image)
    if (wide := _decode_wide(data, image, source_format)) is not None:
        return wide
    if source_format == "tiff":
        formats_io.keep_descriptive_exif(image)  # a TIFF's IFD0 also holds its strip tables, ICC, ...

    icc = image.info.get("icc_profile")
    notes: list[str] = []
    image, exif = _exif_upright(image, notes)
    mode = image.mode
    if mode == "CMYK":
        image, icc = _cmyk_to_rgb(image, notes)
        mode = "RGB"
    if mode == "P" or mode == "PA":
        image = image.convert("RGBA" if ("transparency" in image.info or mode == "PA") else "RGB")
    elif mode in ("1", "L", "LA", "La", "RGB", "RGBA"):
        image = image.convert({"1": "L", "La": "LA"}.get(mode, mode)) if mode in ("1", "La") else image
    elif mode == "RGBa":
        image = image.convert("RGBA")
    elif mode.startswith("I;16") or mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float32)
        scale = 65535.0 if (mode != "F" and array.max(initial=0) <= 65535) else max(1.0, float(array.max(initial=1)))
        pixels = np.clip(array / scale, 0.0, 1.0)[..., None]
        return Picture(pixels, None, 16, source_format, icc, exif, notes)
    else:
        notes.append(f"converted {mode} to RGB")
        image = image.convert("RGB")

    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[..., None]
    alpha = None
    if image.mode in ("RGBA", "LA"):
        alpha, array = array[..., -1], array[..., :-1]
    return Picture(np.ascontiguousarray(array), alpha, 8, source_format, icc, exif, notes)


def choose_format(picture: Picture, requested: str | None) -> str:
    if requested:
        fmt = requested.lower().replace("jpg", "jpeg")
        if fmt not in CONTENT_TYPES:
            raise OutputNotEncodableError(
                f"unsupported output format {requested!r}; use {', '.join(CONTENT_TYPES)}")
        return fmt
    return default_output_format(picture.source_format, has_alpha=picture.alpha is not None,
                                 bit_depth=picture.bit_depth).value


def check_encodable(fmt: str, width: int, height: int) -> None:
    """Fail before any inference when the output could not be written in this format."""
    limit = OUTPUT_MAX_SIDE[OutputFormat(fmt)]
    if max(width, height) > limit:
        raise OutputNotEncodableError(
            f"a {width}x{height} output exceeds the {fmt.upper()} limit of {limit} px per side; "
            "choose a smaller scale or another format (png)")
    max_pixels = OUTPUT_MAX_PIXELS.get(OutputFormat(fmt))
    if max_pixels is not None and width * height > max_pixels:
        raise OutputNotEncodableError(
            f"a {width}x{height} output ({width * height / 1e6:.0f} MP) is more than {fmt.upper()} can encode "
            f"({max_pixels / 1e6:.0f} MP); choose a smaller scale or another format (jpeg, png)")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _encode_png16(color: np.ndarray, alpha: np.ndarray | None, icc: bytes | None, exif: bytes | None,
                  xmp: bytes | None = None) -> bytes:
    height, width, channels = color.shape
    planes = [color] if alpha is None else [color, alpha[..., None]]
    array = np.concatenate(planes, axis=2) if len(planes) > 1 else color
    writer = png.Writer(width, height, greyscale=channels == 1, alpha=alpha is not None, bitdepth=16,
                        compression=PNG_COMPRESS_LEVEL)
    stream = io.BytesIO()
    big_endian = np.ascontiguousarray(array, dtype=">u2").reshape(height, -1)
    writer.write_packed(stream, (row.tobytes() for row in big_endian))
    data = stream.getvalue()
    extra = b""
    if icc:
        extra += _png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc))
    if exif:
        extra += _png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    if xmp:
        extra += _png_chunk(b"iTXt", XMP_ITXT_KEYWORD + b"\x00\x00\x00\x00\x00" + xmp)
    ihdr_end = 8 + 8 + 13 + 4  # signature + IHDR chunk: ancillary chunks go right after it
    return data[:ihdr_end] + extra + data[ihdr_end:]


def encode(color: np.ndarray, alpha: np.ndarray | None, *, fmt: str, bit_depth: int, quality: int,
           icc: bytes | None, exif: bytes | None, notes: list[str], xmp: bytes | None = None) -> bytes:
    """color: HxWxC uint8 (or uint16 when bit_depth 16); alpha: HxW of the same dtype or None."""
    return encode_handed([color, alpha], fmt=fmt, bit_depth=bit_depth, quality=quality, icc=icc, exif=exif,
                         notes=notes, xmp=xmp)


def encode_handed(arrays: list[np.ndarray | None], *, fmt: str, bit_depth: int, quality: int, icc: bytes | None,
                  exif: bytes | None, notes: list[str], xmp: bytes | None = None) -> bytes:
    """`encode` of [color, alpha] handed over: the list is emptied, and the arrays are dropped as soon as the
    encoder holds its own copy, so they are not held beside the encoder's buffers (the engine's largest peak)."""
    color, alpha = arrays
    arrays.clear()
    assert color is not None
    exif, dropped = exif_for_format(exif, fmt)  # never a failure after inference for metadata
    notes.extend(dropped)
    if xmp and fmt == "jpeg" and len(xmp) > JPEG_MAX_XMP_BYTES:
        notes.append(f"The XMP metadata ({len(xmp):,} bytes) is larger than a JPEG can hold and was dropped.")
        xmp = None
    if fmt == "tiff":  # 8 or 16 bits, as decoded
        return formats_io.encode_tiff(color, alpha, icc=icc, exif=exif, xmp=xmp, notes=notes)
    if bit_depth == 16 and fmt == "png":
        return _encode_png16(color, alpha, icc, exif, xmp)
    if bit_depth == 16:
        notes.append(f"{fmt.upper()} holds 8 bits per channel: 16-bit input reduced to 8 bits")
        color = (color.astype(np.float32) / 257.0).round().astype(np.uint8)
        alpha = None if alpha is None else (alpha.astype(np.float32) / 257.0).round().astype(np.uint8)
    gray = color.shape[2] == 1
    image = Image.fromarray(color[..., 0] if gray else color, "L" if gray else "RGB")
    del color
    if alpha is not None:
        if fmt == "jpeg":
            notes.append("JPEG has no transparency: transparent areas flattened onto white")
            background = Image.new(image.mode, image.size, 255 if gray else (255, 255, 255))
            background.paste(image, mask=Image.fromarray(alpha, "L"))
            image = background
        else:
            image.putalpha(Image.fromarray(alpha, "L"))
        del alpha
    options: dict[str, object] = {}
    if icc:
        options["icc_profile"] = icc
    if exif:
        options["exif"] = exif
    if xmp and fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_itxt(XMP_ITXT_KEYWORD.decode(), xmp.decode("utf-8", "replace"))
        options["pnginfo"] = info
    elif xmp:
        options["xmp"] = xmp
    if fmt == "avif":
        return formats_io.encode_avif(image, quality=quality, options=options)
    stream = io.BytesIO()
    if fmt == "jpeg":
        image.save(stream, "JPEG", quality=quality, subsampling=0 if quality >= 90 else 2, optimize=JPEG_OPTIMIZE,
                   **options)
    elif fmt == "webp":
        return _encode_webp(image, quality, options)
    else:
        image.save(stream, "PNG", compress_level=PNG_COMPRESS_LEVEL, **options)
    return stream.getvalue()


def webp_method(pixels: int) -> int:
    return next((method for above, method in WEBP_METHOD_ABOVE if pixels > above), WEBP_METHOD)


def _encode_webp(image: Image.Image, quality: int, options: dict[str, object]) -> bytes:
    method = webp_method(image.width * image.height)
    while True:
        stream = io.BytesIO()
        try:
            image.save(stream, "WEBP", quality=quality, method=method, **options)
            return stream.getvalue()
        except ValueError as exc:
            if _WEBP_OVERFLOW not in str(exc):
                raise
            if method < WEBP_SAFE_METHOD:
                method = WEBP_SAFE_METHOD
                continue
            raise OutputNotEncodableError(
                f"a {image.width}x{image.height} image holds more detail than WebP can store at quality {quality} "
                "(its first partition is limited to 512 KB); choose png, avif or jpeg, or a smaller scale") from exc
