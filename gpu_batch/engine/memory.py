"""Host memory one image needs at each stage, by output format: what docs/engine.md's sizing explains, the CPU
tile planner subtracts, and a pipelined worker can add up for the images it holds at once.

The figures per pixel are measured (benchmarks/engine_memory.py, peak RSS per stage at the largest input) and
rounded up: the encoders hold a Pillow copy of the output (RGB is 4 bytes per pixel inside Pillow) plus their
own buffers, which differ a lot between formats.
"""

from __future__ import annotations

# The share of the job's memory the images one worker holds at once may need together (and the goal for the
# largest accepted image alone); the rest is the runtime, the models and slack.
JOB_MEMORY_SHARE = 0.75

# Float32 planes of the decoded input, and the decoder's own copies while it converts (prepare).
INPUT_BYTES_PER_CHANNEL = 4
DECODE_BYTES_PER_PIXEL = 28  # Pillow's image + the HxWxC float32 array + the CxHxW planes, at the peak
# Beside the output pixels while encoding, per output pixel (8-bit RGB): Pillow's 4-byte copy and the codec's
# buffers (JPEG and PNG stream; WebP's ARGB and YUV pictures; libaom's frame buffers, ~33 bytes; tifffile
# writes from the array itself).
ENCODE_BYTES_PER_OUTPUT_PIXEL = {"jpeg": 5, "png": 5, "webp": 10, "avif": 38, "tiff": 1}
# A forward's batch on the host: its float32 windows going in and its pixels coming back, two batches in flight.
BATCHES_IN_FLIGHT = 2


def input_bytes(width: int, height: int, channels: int) -> int:
    return width * height * channels * INPUT_BYTES_PER_CHANNEL


def output_bytes(width: int, height: int, factor: int, bit_depth: int) -> int:
    """The network's pixels at its native scale (uint8, or uint16 for 16-bit inputs), 3 channels."""
    return width * height * factor * factor * 3 * (2 if bit_depth == 16 else 1)


def window_bytes(window_pixels: int, factor: int, bit_depth: int) -> int:
    """One window on the host: float32 in, final pixels out."""
    return window_pixels * (3 * 4 + factor * factor * 3 * (2 if bit_depth == 16 else 1))


def encode_bytes(out_width: int, out_height: int, fmt: str, *, bit_depth: int = 8, alpha: bool = False) -> int:
    """What the encoder holds beside the output pixels (a fractional scale's resize counts once more)."""
    per_pixel = ENCODE_BYTES_PER_OUTPUT_PIXEL[fmt] * (2 if bit_depth == 16 else 1) + (2 if alpha else 0)
    return out_width * out_height * per_pixel


def peak_bytes(width: int, height: int, scale: float, *, fmt: str, channels: int = 3, bit_depth: int = 8,
               alpha: bool = False, factor: int = 4, window_pixels: int = 0) -> int:
    """The most host memory one image needs at any stage (prepare, infer, encode), runtime and model excluded.
    `window_pixels`: the plan's batch of windows (planning.TilePlan; 0 when the output is one window)."""
    out_width, out_height = round(width * scale), round(height * scale)
    pixels = output_bytes(width, height, factor, bit_depth)
    prepare = width * height * DECODE_BYTES_PER_PIXEL
    infer = input_bytes(width, height, channels) + pixels + BATCHES_IN_FLIGHT * window_bytes(
        window_pixels, factor, bit_depth)
    resized = out_width * out_height * 3 * (2 if bit_depth == 16 else 1) if (out_width, out_height) != (
        width * factor, height * factor) else 0
    encode = pixels + resized + encode_bytes(out_width, out_height, fmt, bit_depth=bit_depth, alpha=alpha)
    return max(prepare, infer, encode)
