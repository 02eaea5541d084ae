"""HEIC, AVIF and TIFF at intake: real files from the codecs, and crafted headers for every rule.

Crafted HEIF files are built box by box (`heif()` below) so that each rule - sizes, bit depth, alpha,
bursts, sequences, grid tiles, codecs, boxes after `mdat` - is tested on exactly the bytes it reads.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pillow_heif
import pytest
import tifffile
from PIL import Image

from common.contract import JobOptions, OutputFormat, RejectionCode
from common.heif import register_heif_opener
from common.settings import Settings
from functions.intake import validation
from functions.intake.validation import ImageHeader, NeedMoreBytes, Verdict, check_header, read_header, validate_bytes

SETTINGS = Settings()
FIRST_FRAME = Settings(accept_animated_first_frame=True)
DEFAULT = JobOptions()


def picture(width: int = 96, height: int = 64, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(width * 31 + height)
    base = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(base).convert(mode)
    if mode == "RGBA":  # real transparency (encoders drop an alpha plane that is all opaque)
        image.putalpha(Image.linear_gradient("L").resize((width, height)))
    return image


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    register_heif_opener()
    stream = io.BytesIO()
    image.save(stream, fmt, **options)
    return stream.getvalue()


def tiff(array: np.ndarray, **options: object) -> bytes:
    stream = io.BytesIO()
    tifffile.imwrite(stream, array, metadata=None, **options)
    return stream.getvalue()


def validate(data: bytes, settings: Settings = SETTINGS, options: JobOptions = DEFAULT) -> Verdict:
    return validate_bytes(data, options=options, settings=settings)


def header(data: bytes) -> ImageHeader:
    found = read_header(data, complete=True, size=len(data))
    assert isinstance(found, ImageHeader), found
    return found


# --- crafted ISOBMFF -----------------------------------------------------------------------------


def box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def full(kind: bytes, payload: bytes, version: int = 0, flags: int = 0) -> bytes:
    return box(kind, bytes([version]) + flags.to_bytes(3, "big") + payload)


def ispe(width: int, height: int) -> bytes:
    return full(b"ispe", struct.pack(">II", width, height))


ALPHA_AUX = full(b"auxC", b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha\x00")


def heif(items: dict[int, tuple[bytes, list[bytes]]], *, primary: int = 1, refs: tuple = (),
         brands: tuple[bytes, ...] = (b"heic", b"mif1", b"heic"), hidden: frozenset[int] = frozenset(),
         mdat_first: int = 0, frames: int = 0) -> bytes:
    """items: id -> (item type, property boxes); refs: (type, from, [to...]). Properties are shared by value."""
    properties: list[bytes] = []
    assoc = b""
    for item_id, (_, props) in items.items():
        indices = []
        for prop in props:
            if prop not in properties:
                properties.append(prop)
            indices.append(properties.index(prop) + 1)
        assoc += struct.pack(">HB", item_id, len(indices)) + bytes(indices)
    infe = b"".join(full(b"infe", struct.pack(">HH4s", item_id, 0, kind) + b"\x00", version=2,
                         flags=int(item_id in hidden)) for item_id, (kind, _) in items.items())
    meta = full(b"meta", b"".join([
        full(b"hdlr", b"\x00" * 4 + b"pict" + b"\x00" * 13),
        full(b"pitm", struct.pack(">H", primary)),
        full(b"iinf", struct.pack(">H", len(items)) + infe),
        full(b"iref", b"".join(box(kind, struct.pack(">HH", src, len(to)) + b"".join(struct.pack(">H", t) for t in to))
                               for kind, src, to in refs)),
        box(b"iprp", box(b"ipco", b"".join(properties)) + full(b"ipma", struct.pack(">I", len(items)) + assoc)),
    ]))
    ftyp = box(b"ftyp", brands[0] + b"\x00" * 4 + b"".join(brands[1:]))
    mdat = box(b"mdat", b"\x00" * max(mdat_first, 64))
    moov = b""
    if frames:
        stbl = box(b"stbl", full(b"stsz", struct.pack(">II", 0, frames)))
        moov = box(b"moov", box(b"trak", box(b"mdia", full(b"hdlr", b"\x00" * 4 + b"pict" + b"\x00" * 13)
                                            + box(b"minf", stbl))))
    return ftyp + (mdat + meta if mdat_first else meta + mdat) + moov


HVC = b"hvc1"
STILL = {1: (HVC, [ispe(4032, 3024)])}


# --- real files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fmt", "out", "mode"), [
    ("heic", "heic", "jpeg", "RGB"),
    ("heic_alpha", "heic", "png", "RGBA"),
    ("heic_10bit", "heic", "png", "RGB"),
    ("avif", "avif", "avif", "RGB"),
    ("avif_alpha", "avif", "avif", "RGBA"),
    ("tiff_lzw_ifd_at_end", "tiff", "tiff", "RGB"),
    ("tiff_deflate_tiled", "tiff", "tiff", "RGB"),
    ("tiff_jpeg", "tiff", "tiff", "RGB"),
    ("tiff_packbits_gray", "tiff", "tiff", "L"),
    ("tiff_rgb16", "tiff", "tiff", "RGB"),
    ("tiff_gray16", "tiff", "tiff", "I;16"),
    ("tiff_rgba16", "tiff", "tiff", "RGBA"),
    ("tiff_cmyk", "tiff", "tiff", "CMYK"),
    ("tiff_planar", "tiff", "tiff", "RGB"),
    ("tiff_with_thumbnail", "tiff", "tiff", "RGB"),
])
def test_real_files_are_accepted_with_the_stated_output(name: str, fmt: str, out: str, mode: str) -> None:
    data = REAL[name]()
    verdict = validate(data)
    assert verdict.accepted, verdict.message
    assert (verdict.format, verdict.output_format, verdict.mode) == (fmt, out, mode)
    assert (verdict.width, verdict.height) == (96, 64)
    assert (verdict.output_width, verdict.output_height) == (384, 256)


def _heic10() -> bytes:
    array = (np.random.default_rng(1).random((64, 96, 3)) * 65535).astype(np.uint16)
    stream = io.BytesIO()
    pillow_heif.from_bytes(mode="RGB;16", size=(96, 64), data=array.tobytes()).save(stream)
    return stream.getvalue()


def _thumbnail_tiff() -> bytes:
    stream = io.BytesIO()
    with tifffile.TiffWriter(stream) as writer:
        writer.write(np.asarray(picture()), photometric="rgb", metadata=None)
        writer.write(np.asarray(picture(24, 16)), photometric="rgb", subfiletype=1, metadata=None)
    return stream.getvalue()


RGB16 = (np.random.default_rng(2).random((64, 96, 3)) * 65535).astype(np.uint16)
REAL = {
    "heic": lambda: save(picture(), "HEIF"),
    "heic_alpha": lambda: save(picture(mode="RGBA"), "HEIF"),
    "heic_10bit": _heic10,
    "avif": lambda: save(picture(), "AVIF"),
    "avif_alpha": lambda: save(picture(mode="RGBA"), "AVIF"),
    "tiff_lzw_ifd_at_end": lambda: save(picture(), "TIFF", compression="tiff_lzw"),
    "tiff_deflate_tiled": lambda: tiff(np.asarray(picture()), photometric="rgb", compression="zlib", tile=(32, 32)),
    "tiff_jpeg": lambda: save(picture(), "TIFF", compression="jpeg"),
    "tiff_packbits_gray": lambda: save(picture(mode="L"), "TIFF", compression="packbits"),
    "tiff_rgb16": lambda: tiff(RGB16, photometric="rgb", compression="zlib"),
    "tiff_gray16": lambda: tiff(RGB16[..., 0], photometric="minisblack"),
    "tiff_rgba16": lambda: tiff(np.dstack([RGB16, RGB16[..., :1]]), photometric="rgb", extrasamples=("unassalpha",)),
    "tiff_cmyk": lambda: save(picture().convert("CMYK"), "TIFF"),
    "tiff_planar": lambda: tiff(np.moveaxis(np.asarray(picture()), -1, 0), photometric="rgb", planarconfig="separate"),
    "tiff_with_thumbnail": _thumbnail_tiff,
}


def test_heic_is_upright_as_decoded_and_orientation_is_not_reported_twice() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    verdict = validate(save(picture(), "HEIF", exif=exif.tobytes()))
    assert verdict.accepted
    assert (verdict.width, verdict.height) == (64, 96)  # irot written by the encoder, applied by libheif
    assert verdict.orientation in (None, 1)


def test_tiff_orientation_tag_gives_the_displayed_size() -> None:
    data = tiff(np.asarray(picture()), photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    verdict = validate(data)
    assert verdict.accepted, verdict.message
    assert (verdict.width, verdict.height) == (64, 96)


def test_a_requested_format_wins_and_heic_is_never_an_output() -> None:
    verdict = validate(save(picture(), "HEIF"), options=JobOptions(output_format=OutputFormat.TIFF))
    assert verdict.output_format == "tiff"
    assert "heic" not in {f.value for f in OutputFormat}


def test_avif_output_side_limit_is_checked_before_decoding() -> None:
    wide = ImageHeader("png", 16_400, 10)
    verdict = check_header(wide, file_size=10_000, options=JobOptions(scale=4, output_format=OutputFormat.AVIF),
                           settings=Settings(max_input_side=20_000, max_input_pixels=10**9))
    assert verdict.code == RejectionCode.OUTPUT_TOO_LARGE
    assert "AVIF cannot store a side longer than 65536" in verdict.message


# --- several images in one file ------------------------------------------------------------------


def test_multi_page_tiff_is_refused_or_first_page_with_a_warning() -> None:
    data = save(picture(), "TIFF", save_all=True, append_images=[picture(), picture()])
    refused = validate(data)
    assert refused.code == RejectionCode.ANIMATED_IMAGE
    assert refused.message.startswith("The TIFF has 3 pages;")
    accepted = validate(data, FIRST_FRAME)
    assert accepted.accepted
    assert accepted.warnings == ("The TIFF has 3 pages; only the first page was upscaled.",)


def test_heic_burst_counts_top_level_images() -> None:
    stream = io.BytesIO()
    burst = pillow_heif.from_pillow(picture())
    burst.add_from_pillow(picture())
    burst.save(stream)
    refused = validate(stream.getvalue())
    assert refused.code == RejectionCode.ANIMATED_IMAGE
    assert "2 images (a burst or sequence)" in refused.message
    assert validate(stream.getvalue(), FIRST_FRAME).accepted


def test_animated_avif_is_an_animated_image() -> None:
    frames = [picture(), picture(96, 64, "RGB").rotate(180), picture()]
    data = save(frames[0], "AVIF", save_all=True, append_images=frames[1:])
    refused = validate(data)
    assert refused.code == RejectionCode.ANIMATED_IMAGE
    assert "animated (3 frames)" in refused.message
    accepted = validate(data, FIRST_FRAME)
    assert accepted.accepted and accepted.frames == 3


def test_grid_tiles_thumbnails_and_aux_images_are_not_extra_images() -> None:
    tiles = {i: (HVC, [ispe(512, 512)]) for i in range(2, 6)}
    items = {1: (b"grid", [ispe(1000, 1000)]), **tiles, 9: (HVC, [ispe(160, 160)]),
             10: (HVC, [ispe(1000, 1000), ALPHA_AUX])}
    data = heif(items, refs=((b"dimg", 1, list(tiles)), (b"thmb", 9, [1]), (b"auxl", 10, [1])), hidden=frozenset(tiles))
    found = header(data)
    assert (found.width, found.height, found.frames, found.channels) == (1000, 1000, 1, 4)


def test_sequence_frames_come_from_the_track() -> None:
    data = heif(STILL, brands=(b"msf1", b"mif1", b"heic"), frames=12)
    found = header(data)
    assert found.animated and found.frames == 12


# --- crafted headers: each rule ------------------------------------------------------------------


def test_heif_header_declared_facts() -> None:
    pixi10 = full(b"pixi", bytes([3, 10, 10, 10]))
    found = header(heif({1: (HVC, [ispe(4032, 3024), pixi10, box(b"irot", b"\x01")])}))
    assert (found.format, found.width, found.height, found.bits_per_sample) == ("heic", 3024, 4032, 10)
    avif = header(heif({1: (b"av01", [ispe(640, 480)])}, brands=(b"avif", b"mif1", b"miaf")))
    assert avif.format == "avif"


def test_generic_heif_brand_is_decided_by_the_codec_of_the_primary_item() -> None:
    assert header(heif({1: (b"av01", [ispe(640, 480)])}, brands=(b"mif1", b"miaf"))).format == "avif"


def test_heif_bomb_is_refused_from_the_header_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "decode_check", lambda *_: pytest.fail("a bomb must not be decoded"))
    verdict = validate(heif({1: (HVC, [ispe(100_000, 100_000)])}))
    assert verdict.code == RejectionCode.DECOMPRESSION_BOMB
    assert "100000×100000" in verdict.message


def test_grid_whose_tiles_outweigh_the_image_is_a_bomb() -> None:
    tiles = {i: (HVC, [ispe(16_384, 16_384)]) for i in range(2, 4)}
    data = heif({1: (b"grid", [ispe(512, 512)]), **tiles}, refs=((b"dimg", 1, list(tiles)),))
    verdict = validate(data)
    assert verdict.code == RejectionCode.DECOMPRESSION_BOMB
    assert "tiles of 537 MP" in verdict.message


@pytest.mark.parametrize(("items", "code", "words"), [
    ({1: (b"vvc1", [ispe(64, 64)])}, RejectionCode.UNSUPPORTED_FORMAT, "'vvc1' codec"),
    ({1: (b"jpeg", [ispe(64, 64)])}, RejectionCode.UNSUPPORTED_FORMAT, "'jpeg' codec"),
    ({1: (HVC, [])}, RejectionCode.CORRUPT_IMAGE, "no size (ispe)"),
    ({1: (HVC, [ispe(0, 64)])}, RejectionCode.CORRUPT_IMAGE, "zero dimension"),
    ({2: (HVC, [ispe(64, 64)])}, RejectionCode.CORRUPT_IMAGE, "primary item 1 is not listed"),
])
def test_heif_rules(items: dict, code: RejectionCode, words: str) -> None:
    verdict = validate(heif(items))
    assert verdict.code == code
    assert words in verdict.message


def test_heif_box_size_beyond_the_file_is_corrupt() -> None:
    data = bytearray(heif(STILL))
    meta_at = data.index(b"meta") - 4
    data[meta_at:meta_at + 4] = struct.pack(">I", 10**6)
    verdict = validate(bytes(data))
    assert verdict.code == RejectionCode.CORRUPT_IMAGE


def test_a_video_is_not_an_image() -> None:
    verdict = validate(box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2mp41") + box(b"mdat", b"\x00" * 64))
    assert verdict.code == RejectionCode.UNSUPPORTED_FORMAT
    assert "a video" in verdict.message


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_truncated_heif_is_refused_from_the_header(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "decode_check", lambda *_: pytest.fail("found from iloc, without decoding"))
    data = save(picture(), fmt)
    verdict = validate(data[: len(data) - 10])
    assert verdict.code == RejectionCode.CORRUPT_IMAGE
    assert "file ends at byte" in verdict.message and "truncated upload?" in verdict.message


def test_truncated_heic_and_tiff_are_corrupt() -> None:
    heic = save(picture(), "HEIF")
    assert validate(heic[: len(heic) - 100]).code == RejectionCode.CORRUPT_IMAGE
    data = save(picture(), "TIFF")
    assert validate(data[: len(data) // 2]).code == RejectionCode.CORRUPT_IMAGE


def _patch_tag(data: bytes, tag: int, value: int) -> bytes:
    """Set an inline SHORT/LONG tag of the first IFD of a little-endian TIFF."""
    out = bytearray(data)
    ifd = struct.unpack_from("<I", out, 4)[0]
    for i in range(struct.unpack_from("<H", out, ifd)[0]):
        at = ifd + 2 + 12 * i
        if struct.unpack_from("<H", out, at)[0] == tag:
            kind = struct.unpack_from("<H", out, at + 2)[0]
            struct.pack_into("<H" if kind == 3 else "<I", out, at + 8, value)
            return bytes(out)
    raise AssertionError(f"tag {tag} not found")


GRAY8 = np.zeros((64, 96), np.uint8)


@pytest.mark.parametrize(("data", "code", "words"), [
    (tiff(GRAY8.astype(np.float32)), RejectionCode.UNSUPPORTED_FORMAT, "floating-point samples"),
    (tiff(GRAY8.astype(np.int16)), RejectionCode.UNSUPPORTED_FORMAT, "signed-integer samples"),
    (tiff(GRAY8.astype(np.complex64)), RejectionCode.UNSUPPORTED_FORMAT, "complex floating-point samples"),
    (tiff(GRAY8.astype(np.uint32)), RejectionCode.UNSUPPORTED_FORMAT, "32 bits per sample"),
    (_patch_tag(tiff(GRAY8), 259, 50000), RejectionCode.UNSUPPORTED_FORMAT, "Zstandard compression"),
    (_patch_tag(tiff(GRAY8), 259, 6), RejectionCode.UNSUPPORTED_FORMAT, "old-style JPEG compression"),
    (_patch_tag(tiff(GRAY8), 262, 8), RejectionCode.UNSUPPORTED_FORMAT, "CIELab"),
    (tiff(np.dstack([GRAY8, GRAY8]).astype(np.uint16), photometric="minisblack", extrasamples=("unassalpha",)),
     RejectionCode.UNSUPPORTED_FORMAT, "16-bit grayscale with an alpha channel"),
    (tiff(GRAY8.astype(np.uint16), photometric="miniswhite"), RejectionCode.UNSUPPORTED_FORMAT,
     "white-is-zero grayscale TIFF has 16 bits"),
    (b"II+\x00" + b"\x00" * 60, RejectionCode.UNSUPPORTED_FORMAT, "BigTIFF"),
    (_patch_tag(tiff(GRAY8, tile=(32, 32)), 322, 24), RejectionCode.CORRUPT_IMAGE, "not a multiple of 16"),
    (_patch_tag(tiff(GRAY8), 256, 0), RejectionCode.CORRUPT_IMAGE, "zero dimension"),
])
def test_tiff_rules(data: bytes, code: RejectionCode, words: str) -> None:
    verdict = validate(data)
    assert verdict.code == code, verdict.message
    assert words in verdict.message
    assert verdict.message.endswith(".")


def test_tiff_bombs_are_refused_from_the_header_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "decode_check", lambda *_: pytest.fail("a bomb must not be decoded"))
    canvas = _patch_tag(_patch_tag(tiff(GRAY8), 256, 100_000), 257, 100_000)
    assert validate(canvas).code == RejectionCode.DECOMPRESSION_BOMB
    tiles = _patch_tag(_patch_tag(tiff(GRAY8, tile=(32, 32)), 322, 65_536 - 16), 323, 65_536 - 16)
    verdict = validate(tiles)
    assert verdict.code == RejectionCode.DECOMPRESSION_BOMB
    assert "tiles of" in verdict.message


def test_tiff_page_loop_is_corrupt() -> None:
    data = bytearray(tiff(GRAY8))
    ifd = struct.unpack_from("<I", data, 4)[0]
    count = struct.unpack_from("<H", data, ifd)[0]
    struct.pack_into("<I", data, ifd + 2 + 12 * count, ifd)  # next IFD = itself
    assert validate(bytes(data)).code == RejectionCode.CORRUPT_IMAGE


# --- reading only what the header needs ----------------------------------------------------------


def read_like_intake(data: bytes, first: int = 65_536) -> tuple[ImageHeader | Verdict, int]:
    """Intake's loop (functions/intake/intake.py _check_header): the first bytes, then far ranges."""
    head, far, read = data[:first], {}, min(first, len(data))
    while True:
        found = read_header(head, complete=len(head) >= len(data), far=far, size=len(data))
        if not isinstance(found, NeedMoreBytes):
            return found, read
        if found.offset > len(head):
            far[found.offset] = data[found.offset:max(found.at_least, found.offset + first)]
            read += len(far[found.offset])
        else:
            head = data[:max(found.at_least, 2 * len(head))]
            read = max(read, len(head))


def test_tiff_ifd_after_the_pixels_is_read_with_one_far_range() -> None:
    big = np.asarray(picture(1200, 900))
    data = save(Image.fromarray(big), "TIFF", compression="tiff_adobe_deflate")
    assert struct.unpack_from("<I", data, 4)[0] > 65_536, "libtiff writes the IFD after the pixels"
    found, read = read_like_intake(data, first=4096)
    assert isinstance(found, ImageHeader) and (found.width, found.height) == (1200, 900)
    assert read <= 2 * 4096 + 64


def test_heif_meta_after_mdat_is_found_by_box_headers() -> None:
    data = heif(STILL, mdat_first=5_000_000)
    found, read = read_like_intake(data, first=4096)
    assert isinstance(found, ImageHeader) and found.width == 4032
    assert read < 3 * 4096


# --- the validate CLI ----------------------------------------------------------------------------


def test_validate_cli_covers_the_new_formats(tmp_path) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from functions.intake.cli import validate as validate_command

    app = typer.Typer()
    app.command()(validate_command)
    runner = CliRunner()
    heic = tmp_path / "IMG_0001.HEIC"
    heic.write_bytes(save(picture(mode="RGBA"), "HEIF"))
    shown = runner.invoke(app, [str(heic)])
    assert shown.exit_code == 0, shown.output
    assert "HEIC 96×64 RGBA" in shown.output and "output: png 384×256" in shown.output

    pages = tmp_path / "scan.tif"
    pages.write_bytes(save(picture(), "TIFF", save_all=True, append_images=[picture()]))
    refused = runner.invoke(app, [str(pages), "--json"])
    assert refused.exit_code == 1
    data = json.loads(refused.output)
    assert (data["code"], data["format"], data["frames"]) == ("ANIMATED_IMAGE", "tiff", 2)

    as_avif = runner.invoke(app, [str(heic), "--json", "--format", "avif"])
    assert json.loads(as_avif.output)["output_format"] == "avif"


# --- damaged files never escape as exceptions ----------------------------------------------------


def mutants(data: bytes, count: int, seed: int) -> list[bytes]:
    """`count` copies of `data` with a few bytes changed (mostly in the header) or cut short."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(count):
        copy = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(min(len(copy), 600)) if rng.random() < 0.8 else rng.randrange(len(copy))
            copy[at] = rng.randrange(256)
        out.append(bytes(copy[: rng.randrange(len(copy))] if rng.random() < 0.1 else copy))
    return out


@pytest.mark.parametrize("name", ["heic", "avif", "tiff_lzw_ifd_at_end", "tiff_deflate_tiled", "tiff_rgb16"])
def test_mutated_files_end_in_a_verdict(name: str) -> None:
    for data in mutants(REAL[name](), 120, seed=len(name)):
        verdict = validate(data)
        assert verdict.accepted or (verdict.code and verdict.message.endswith((".", ")")))
