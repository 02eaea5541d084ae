"""HEIC, AVIF and TIFF through the engine: size, mode, bit depth, ICC, EXIF (orientation), XMP survive."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pillow_heif
import png  # pypng: reads the bit depth Pillow would hide
import pytest
import tifffile
from PIL import Image, ImageCms

from common.heif import register_heif_opener
from gpu_batch.engine import Engine
from gpu_batch.engine.engine import UpscaleResult
from gpu_batch.engine.errors import OutputNotEncodableError

MODEL = "animevideov3"  # the fast network: these tests are about the containers, not the pixels
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'
W, H = 40, 24


def photo(mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(7)
    image = Image.fromarray((rng.random((H, W, 3)) * 255).astype(np.uint8)).convert(mode)
    if mode == "RGBA":
        image.putalpha(Image.linear_gradient("L").resize((W, H)))
    return image


def exif(orientation: int = 1) -> bytes:
    tags = Image.Exif()
    tags[0x0112] = orientation
    tags[0x010F] = "Canon"
    return tags.tobytes()


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    register_heif_opener()
    stream = io.BytesIO()
    image.save(stream, fmt, **options)
    return stream.getvalue()


def opened(data: bytes) -> Image.Image:
    register_heif_opener()
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def upscale(engine: Engine, data: bytes, **options: object) -> UpscaleResult:
    return engine.upscale_bytes(data, model=MODEL, scale=2, **options)


def rgb16(seed: int = 3) -> np.ndarray:
    return (np.random.default_rng(seed).random((H, W, 3)) * 65535).astype(np.uint16)


def test_heic_becomes_upright_jpeg_with_icc_exif_and_xmp(engine: Engine) -> None:
    data = save(photo(), "HEIF", exif=exif(6), icc_profile=ICC, xmp=XMP)
    result = upscale(engine, data)
    out = opened(result.data)
    assert (result.format, out.format, out.mode) == ("jpeg", "JPEG", "RGB")
    assert out.size == (2 * H, 2 * W)  # rotated upright once, not twice
    assert out.info["icc_profile"] == ICC
    assert out.getexif()[0x0112] == 1 and out.getexif()[0x010F] == "Canon"
    assert out.info["xmp"] == XMP


def test_heic_with_alpha_becomes_png_with_alpha(engine: Engine) -> None:
    result = upscale(engine, save(photo("RGBA"), "HEIF"))
    out = opened(result.data)
    assert (result.format, out.mode, out.size) == ("png", "RGBA", (2 * W, 2 * H))
    assert np.asarray(out)[..., 3].min() < 50  # the transparent end of the gradient survived


def test_10bit_heic_becomes_16bit_png(engine: Engine) -> None:
    stream = io.BytesIO()
    pillow_heif.from_bytes(mode="RGB;16", size=(W, H), data=rgb16().tobytes()).save(stream)
    result = upscale(engine, stream.getvalue())
    width, height, _, info = png.Reader(bytes=result.data).read()
    assert (result.format, width, height, info["bitdepth"], info["planes"]) == ("png", 2 * W, 2 * H, 16, 3)


def test_avif_round_trip_keeps_alpha_icc_exif_xmp(engine: Engine) -> None:
    data = save(photo("RGBA"), "AVIF", exif=exif(), icc_profile=ICC, xmp=XMP)
    result = upscale(engine, data)
    out = opened(result.data)
    assert (result.format, result.content_type, out.format, out.mode) == ("avif", "image/avif", "AVIF", "RGBA")
    assert out.size == (2 * W, 2 * H)
    assert out.info["icc_profile"] == ICC
    assert out.getexif()[0x010F] == "Canon"
    assert out.info["xmp"] == XMP


@pytest.mark.parametrize("compression", [None, "lzw", "zlib", "packbits", "jpeg"])
def test_8bit_tiff_round_trip(engine: Engine, compression: str | None) -> None:
    data = io.BytesIO()
    tifffile.imwrite(data, np.asarray(photo()), photometric="rgb", compression=compression, iccprofile=ICC,
                     extratags=[(274, "H", 1, 6, True), (271, "s", 0, "Canon", True), (700, "B", len(XMP), XMP, True)],
                     metadata=None)
    result = upscale(engine, data.getvalue())
    assert result.format == "tiff" and result.content_type == "image/tiff"
    with tifffile.TiffFile(io.BytesIO(result.data)) as tif:
        page = tif.pages.first
        assert page.shape == (2 * W, 2 * H, 3) and page.dtype == np.uint8  # upright: orientation 6 applied
        assert page.tags[34675].value == ICC
        assert page.tags[271].value == "Canon"
        assert page.tags[700].value == XMP
        assert 274 not in page.tags  # nothing left for a viewer to rotate again


def test_16bit_tiff_stays_16bit_and_is_oriented(engine: Engine) -> None:
    stream = io.BytesIO()
    tifffile.imwrite(stream, rgb16(), photometric="rgb", compression="lzw", extratags=[(274, "H", 1, 8, True)],
                     metadata=None)
    result = upscale(engine, stream.getvalue())
    with tifffile.TiffFile(io.BytesIO(result.data)) as tif:
        page = tif.pages.first
        assert (page.shape, page.dtype) == ((2 * W, 2 * H, 3), np.uint16)
        assert int(page.asarray().max()) > 255 * 257 // 2  # real 16-bit values, not 8 bits shifted


def test_16bit_rgba_tiff_keeps_alpha_at_16_bits(engine: Engine) -> None:
    array = np.dstack([rgb16(), np.full((H, W, 1), 30_000, np.uint16)])
    stream = io.BytesIO()
    tifffile.imwrite(stream, array, photometric="rgb", extrasamples=("unassalpha",), metadata=None)
    result = upscale(engine, stream.getvalue())
    out = tifffile.imread(io.BytesIO(result.data))
    assert out.shape == (2 * H, 2 * W, 4) and out.dtype == np.uint16
    assert abs(int(np.median(out[..., 3])) - 30_000) < 200


def test_16bit_gray_tiff_stays_gray_16bit(engine: Engine) -> None:
    stream = io.BytesIO()
    tifffile.imwrite(stream, rgb16()[..., 0], photometric="minisblack", metadata=None)
    out = tifffile.imread(io.BytesIO(upscale(engine, stream.getvalue()).data))
    assert out.shape == (2 * H, 2 * W) and out.dtype == np.uint16


def test_cmyk_tiff_is_converted_like_cmyk_jpeg(engine: Engine) -> None:
    result = upscale(engine, save(photo().convert("CMYK"), "TIFF"))
    out = tifffile.imread(io.BytesIO(result.data))
    assert out.shape == (2 * H, 2 * W, 3)


def test_multi_page_tiff_upscales_the_first_page(engine: Engine) -> None:
    pages = [photo(), Image.new("RGB", (W, H), "white")]
    data = save(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    out = tifffile.imread(io.BytesIO(upscale(engine, data).data))
    assert out.shape == (2 * H, 2 * W, 3) and out.std() > 10  # the textured first page, not the white one


def test_tiff_storage_tags_do_not_leak_into_jpeg_exif(engine: Engine) -> None:
    stream = io.BytesIO()
    tifffile.imwrite(stream, np.asarray(photo()), photometric="rgb", extratags=[(271, "s", 0, "Canon", True)],
                     metadata=None)
    out = opened(upscale(engine, stream.getvalue(), output_format="jpeg").data)
    tags = out.getexif()
    assert tags[0x010F] == "Canon"
    assert not {256, 257, 273, 279} & set(tags)


def test_png_to_avif_and_tiff_on_request(engine: Engine) -> None:
    data = save(photo(), "PNG")
    assert opened(upscale(engine, data, output_format="avif").data).format == "AVIF"
    assert opened(upscale(engine, data, output_format="tiff").data).format == "TIFF"


def test_heic_is_not_an_output_format(engine: Engine) -> None:
    with pytest.raises(OutputNotEncodableError, match="avif, tiff"):
        upscale(engine, save(photo(), "PNG"), output_format="heic")


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF", "TIFF"])
def test_mutated_files_decode_or_fail_as_undecodable(fmt: str) -> None:
    import random

    from gpu_batch.engine import codec
    from gpu_batch.engine.errors import UndecodableImageError

    rng = random.Random(fmt)
    data = save(photo(), fmt, **({"compression": "tiff_lzw"} if fmt == "TIFF" else {}))
    for _ in range(100):
        copy = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            copy[rng.randrange(min(len(copy), 600))] = rng.randrange(256)
        with contextlib.suppress(UndecodableImageError):  # anything else would escape to the worker
            codec.decode(bytes(copy))
