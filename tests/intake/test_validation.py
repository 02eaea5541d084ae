"""Content-based validation over the generated corpus, and each limit on its own."""

from __future__ import annotations

import pytest

from common.contract import JobOptions, OutputFormat, RejectionCode
from common.settings import Settings
from functions.intake import validation
from functions.intake.validation import (
    ImageHeader,
    NeedMoreBytes,
    Verdict,
    check_header,
    read_header,
    sniff_format,
    validate_bytes,
)

SETTINGS = Settings()
DEFAULT = JobOptions()

ACCEPTED = {
    # name: (format, width, height, mode)
    "photo.jpg": ("jpeg", 96, 64, "RGB"),
    "photo.png": ("png", 96, 64, "RGB"),
    "photo.webp": ("webp", 96, 64, "RGB"),
    "progressive.jpg": ("jpeg", 96, 64, "RGB"),
    "gray.jpg": ("jpeg", 96, 64, "L"),
    "cmyk.jpg": ("jpeg", 96, 64, "CMYK"),
    "alpha.png": ("png", 96, 64, "RGBA"),
    "alpha.webp": ("webp", 96, 64, None),
    "palette.png": ("png", 96, 64, "P"),
    "gray16.png": ("png", 96, 64, "I;16"),
    "rgb16.png": ("png", 40, 30, "RGB"),
    "exif_rotated.jpg": ("jpeg", 80, 40, "RGB"),
    "big_exif.jpg": ("jpeg", 96, 64, "RGB"),
    "long_but_ok.png": ("png", 4000, 8, "L"),
    "scan.tiff": ("tiff", 96, 64, "RGB"),
}

REFUSED = {
    "empty.jpg": RejectionCode.EMPTY_FILE,
    "truncated.jpg": RejectionCode.CORRUPT_IMAGE,
    "truncated.png": RejectionCode.CORRUPT_IMAGE,
    "truncated.webp": RejectionCode.CORRUPT_IMAGE,
    "header_only.png": RejectionCode.CORRUPT_IMAGE,
    "corrupt_crc.png": RejectionCode.CORRUPT_IMAGE,
    "random.jpg": RejectionCode.UNSUPPORTED_FORMAT,
    "notes.txt": RejectionCode.UNSUPPORTED_FORMAT,
    "drawing.svg": RejectionCode.UNSUPPORTED_FORMAT,
    "page.html": RejectionCode.UNSUPPORTED_FORMAT,
    "doc.pdf": RejectionCode.UNSUPPORTED_FORMAT,
    "still.gif": RejectionCode.UNSUPPORTED_FORMAT,
    "animated.gif": RejectionCode.UNSUPPORTED_FORMAT,
    "bitmap.bmp": RejectionCode.UNSUPPORTED_FORMAT,
    "animated.webp": RejectionCode.ANIMATED_IMAGE,
    "animated.png": RejectionCode.ANIMATED_IMAGE,
    "bomb.png": RejectionCode.DECOMPRESSION_BOMB,
    "bomb.jpg": RejectionCode.DECOMPRESSION_BOMB,
    "bomb.webp": RejectionCode.DECOMPRESSION_BOMB,
    "too_long_side.png": RejectionCode.SIDE_TOO_LONG,
    "tiny.png": RejectionCode.IMAGE_TOO_SMALL,
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_good_files_are_accepted_with_their_facts(corpus: dict[str, bytes], name: str) -> None:
    verdict = validate_bytes(corpus[name], options=DEFAULT, settings=SETTINGS)
    fmt, width, height, mode = ACCEPTED[name]
    assert verdict.accepted, verdict.message
    assert (verdict.format, verdict.width, verdict.height) == (fmt, width, height)
    if mode:
        assert verdict.mode == mode
    assert verdict.frames == 1
    assert verdict.output_format == fmt  # follows the input by default
    assert (verdict.output_width, verdict.output_height) == (width * 4, height * 4)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_bad_files_are_refused_with_code_and_sentence(corpus: dict[str, bytes], name: str) -> None:
    verdict = validate_bytes(corpus[name], options=DEFAULT, settings=SETTINGS)
    assert not verdict.accepted
    assert verdict.code is REFUSED[name], verdict.message
    assert verdict.message.endswith("."), "a full sentence a person can read"
    assert len(verdict.message) > 15


def test_file_names_and_magic_decide_nothing_but_content(corpus: dict[str, bytes]) -> None:
    # The corpus names lie on purpose: random.jpg is not a JPEG; a PNG called .jpg is still a PNG.
    assert sniff_format(corpus["random.jpg"]) == "unknown"
    assert validate_bytes(corpus["photo.png"], options=DEFAULT, settings=SETTINGS).format == "png"


@pytest.mark.parametrize(("name", "kind"), [("notes.txt", "text"), ("drawing.svg", "svg"), ("page.html", "html"),
                                            ("doc.pdf", "pdf"), ("still.gif", "gif"), ("bitmap.bmp", "bmp")])
def test_refusal_names_what_the_file_is(corpus: dict[str, bytes], name: str, kind: str) -> None:
    verdict = validate_bytes(corpus[name], options=DEFAULT, settings=SETTINGS)
    assert verdict.format == kind
    assert "JPEG, PNG, WebP, HEIC, AVIF or TIFF" in verdict.message


def test_exif_orientation_is_reported(corpus: dict[str, bytes]) -> None:
    verdict = validate_bytes(corpus["exif_rotated.jpg"], options=DEFAULT, settings=SETTINGS)
    assert verdict.orientation == 6


@pytest.mark.parametrize("name", ["bomb.png", "bomb.jpg", "bomb.webp"])
def test_bombs_are_refused_from_the_header_without_decoding(corpus: dict[str, bytes], name: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a bomb must not reach the decoder")

    monkeypatch.setattr(validation, "decode_check", never)
    monkeypatch.setattr(validation.Image, "open", never)
    data = corpus[name]
    header = read_header(data[:1024], complete=len(data) <= 1024)
    assert isinstance(header, ImageHeader)
    assert header.width * header.height > 10 * SETTINGS.max_input_pixels
    verdict = validate_bytes(data, options=DEFAULT, settings=SETTINGS)
    assert verdict.code is RejectionCode.DECOMPRESSION_BOMB
    assert f"{header.width}×{header.height}" in verdict.message


def test_jpeg_header_beyond_first_bytes_asks_for_more(corpus: dict[str, bytes]) -> None:
    data = corpus["big_exif.jpg"]
    first = read_header(data[:65_536], complete=False)
    assert isinstance(first, NeedMoreBytes)
    assert first.at_least > 65_536
    grown = data[:first.at_least]
    while isinstance(found := read_header(grown, complete=False), NeedMoreBytes):
        grown = data[:max(found.at_least, 2 * len(grown))]
    assert isinstance(found, ImageHeader)
    assert (found.width, found.height) == (96, 64)


def test_truncated_header_of_a_whole_file_is_corrupt(corpus: dict[str, bytes]) -> None:
    assert isinstance(read_header(corpus["photo.png"][:20], complete=False), NeedMoreBytes)
    verdict = read_header(corpus["photo.png"][:20], complete=True)
    assert isinstance(verdict, Verdict) and verdict.code is RejectionCode.CORRUPT_IMAGE


def _header(width: int, height: int, fmt: str = "png", **kwargs: object) -> ImageHeader:
    return ImageHeader(fmt, width, height, **kwargs)  # type: ignore[arg-type]


BIG_FILE = 20 * 1024 * 1024  # a real, well-compressed photo: not a bomb


@pytest.mark.parametrize(("header", "options", "code"), [
    (_header(5000, 4000, "jpeg"), DEFAULT, RejectionCode.TOO_MANY_PIXELS),
    (_header(16_385, 100, "jpeg"), JobOptions(scale=1.0), RejectionCode.SIDE_TOO_LONG),
    (_header(7, 1000), DEFAULT, RejectionCode.IMAGE_TOO_SMALL),
    # 4100 px at 4x = 16400 > WebP's 16383
    (_header(4100, 100, "webp"), DEFAULT, RejectionCode.OUTPUT_TOO_LARGE),
    (_header(4100, 100, "png"), JobOptions(output_format=OutputFormat.WEBP), RejectionCode.OUTPUT_TOO_LARGE),
    # 3000² at 4x = 144 MP: more than WebP's first partition holds
    (_header(3000, 3000, "webp"), DEFAULT, RejectionCode.OUTPUT_TOO_LARGE),
    # 16384 px at 4x = 65536 > JPEG's 65500
    (_header(16_384, 8, "jpeg"), DEFAULT, RejectionCode.OUTPUT_TOO_LARGE),
    (_header(4096, 4096, "png", animated=True, frames=2), DEFAULT, RejectionCode.ANIMATED_IMAGE),
])
def test_each_limit(header: ImageHeader, options: JobOptions, code: RejectionCode) -> None:
    verdict = check_header(header, file_size=BIG_FILE, options=options, settings=SETTINGS)
    assert verdict.code is code, verdict.message
    assert (verdict.width, verdict.height) == (header.width, header.height)


@pytest.mark.parametrize(("header", "options"), [
    (_header(4096, 4096, "jpeg"), DEFAULT),  # exactly the 16.7 MP limit, 256 MP out
    (_header(4095, 100, "webp"), DEFAULT),  # 16380 px out: fits WebP
    (_header(2896, 2896, "webp"), DEFAULT),  # 134.2 MP out: WebP's largest
    (_header(4100, 100, "png"), DEFAULT),  # PNG has no practical side limit
    (_header(16_384, 8, "png"), DEFAULT),
    (_header(16_384, 8, "jpeg"), JobOptions(scale=3.99)),  # 65372 px: fits JPEG
    (_header(8, 8, "png"), DEFAULT),
])
def test_within_limits(header: ImageHeader, options: JobOptions) -> None:
    verdict = check_header(header, file_size=BIG_FILE, options=options, settings=SETTINGS)
    assert verdict.accepted, verdict.message


def test_output_pixel_limit_and_memory_bound_come_from_settings() -> None:
    header = _header(2000, 2000, "jpeg")
    assert check_header(header, file_size=BIG_FILE, options=DEFAULT, settings=SETTINGS).accepted
    tight = SETTINGS.replace(max_output_pixels=10_000_000)
    assert check_header(header, file_size=BIG_FILE, options=DEFAULT,
                        settings=tight).code is RejectionCode.OUTPUT_TOO_LARGE
    assert check_header(header, file_size=BIG_FILE, options=JobOptions(scale=1.5), settings=tight).accepted
    small_memory = SETTINGS.replace(decode_memory_limit_bytes=8 * 1024 * 1024)  # 2000² RGB needs 16 MB
    assert check_header(header, file_size=BIG_FILE, options=DEFAULT,
                        settings=small_memory).code is RejectionCode.TOO_MANY_PIXELS
    # 16-bit samples double the bound
    assert check_header(_header(1500, 1000, bits_per_sample=16), file_size=BIG_FILE, options=DEFAULT,
                        settings=small_memory).code is RejectionCode.TOO_MANY_PIXELS


def test_animated_first_frame_policy(corpus: dict[str, bytes]) -> None:
    lenient = SETTINGS.replace(accept_animated_first_frame=True)
    for name in ("animated.webp", "animated.png"):
        assert validate_bytes(corpus[name], options=DEFAULT, settings=SETTINGS).code is RejectionCode.ANIMATED_IMAGE
        verdict = validate_bytes(corpus[name], options=DEFAULT, settings=lenient)
        assert verdict.accepted, verdict.message
        assert verdict.frames == 3
        assert verdict.warnings and "first frame" in verdict.warnings[0]
    # GIF stays unsupported either way: the engine writes no GIF and we do not convert formats silently.
    assert validate_bytes(corpus["animated.gif"], options=DEFAULT,
                          settings=lenient).code is RejectionCode.UNSUPPORTED_FORMAT


def test_explicit_output_format_and_scale(corpus: dict[str, bytes]) -> None:
    verdict = validate_bytes(corpus["photo.png"], options=JobOptions(scale=2.5, output_format=OutputFormat.JPEG),
                             settings=SETTINGS)
    assert (verdict.output_format, verdict.output_width, verdict.output_height) == ("jpeg", 240, 160)


def test_file_size_limit(corpus: dict[str, bytes]) -> None:
    verdict = validate_bytes(corpus["photo.png"], options=DEFAULT, settings=SETTINGS.replace(max_upload_bytes=1000))
    assert verdict.code is RejectionCode.FILE_TOO_LARGE


def test_verdict_to_dict_is_json_ready(corpus: dict[str, bytes]) -> None:
    import json

    data = validate_bytes(corpus["bomb.png"], options=DEFAULT, settings=SETTINGS).to_dict()
    assert json.loads(json.dumps(data))["code"] == "DECOMPRESSION_BOMB"
