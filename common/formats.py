"""Facts about output formats and scales that intake, the worker and the engine all rely on.

Intake decides with these before any GPU time is spent; the engine enforces the same numbers, so a
job intake accepted never fails for a limit intake did not know.
"""

from __future__ import annotations

from collections.abc import Mapping

from common.contract import OutputFormat

MIN_SCALE = 1.0
MAX_SCALE = 4.0

# Largest side each output encoder can write: WebP's bitstream stores 14 bits, libjpeg 65500.
OUTPUT_MAX_SIDE: Mapping[OutputFormat, int] = {
    OutputFormat.JPEG: 65_500,
    OutputFormat.PNG: 2**31 - 1,
    OutputFormat.WEBP: 16_383,
    OutputFormat.AVIF: 65_536,  # AV1 frame headers store sides of up to 16 bits
    OutputFormat.TIFF: 2**31 - 1,  # 32-bit fields; 256 MP x 8 B stays under classic TIFF's 4 GB
}

# Most output pixels a format's encoder writes reliably. libwebp keeps every macroblock's modes in a first
# partition of at most 512 KB: photo-like outputs overflow it from ~150 MP even at its slowest methods
# (docs/engine.md, "Encoders on a GPU host"), so intake refuses larger WebP outputs before any GPU time.
OUTPUT_MAX_PIXELS: Mapping[OutputFormat, int] = {OutputFormat.WEBP: 2**27}

# File extension of each output format (the output key's extension is replaced with it).
EXTENSIONS: Mapping[OutputFormat, str] = {
    OutputFormat.JPEG: ".jpg",
    OutputFormat.PNG: ".png",
    OutputFormat.WEBP: ".webp",
    OutputFormat.AVIF: ".avif",
    OutputFormat.TIFF: ".tif",
}

# Output formats that store more than 8 bits per channel (the others reduce 16-bit input to 8 bits).
HIGH_BIT_DEPTH_FORMATS = frozenset({OutputFormat.PNG, OutputFormat.TIFF})


def default_output_format(input_format: str | None, *, has_alpha: bool, bit_depth: int) -> OutputFormat:
    """"Same as the input", where the project writes that format; otherwise the closest format it writes well.

    HEIC is read but not written: the HEVC encoder available (x265 in pillow-heif's wheels) is GPL and
    HEVC encoding needs a patent licence. A HEIC photo becomes JPEG, or PNG when it has alpha or more than
    8 bits per channel (PNG keeps both). Anything else unknown (GIF, BMP in the CLI) becomes PNG.
    """
    try:
        return OutputFormat(input_format or "")
    except ValueError:
        pass
    if input_format in ("heic", "heif") and not has_alpha and bit_depth <= 8:
        return OutputFormat.JPEG
    return OutputFormat.PNG


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The output's dimensions for an input of width x height at `scale` (the one rounding rule)."""
    return max(1, round(width * scale)), max(1, round(height * scale))


def scale_in_range(scale: float) -> bool:
    """True for MIN_SCALE <= scale <= MAX_SCALE (False for NaN)."""
    return MIN_SCALE <= scale <= MAX_SCALE
