"""The output is the same picture: orientation, metadata, alpha, gray, 16 bits, CMYK, palette, colour, format."""

from __future__ import annotations

import io

import numpy as np
import png
import pytest
from PIL import Image, ImageCms, ImageDraw

from gpu_batch.engine import EngineError, OutputNotEncodableError, UndecodableImageError

FAST = "animevideov3"  # fidelity does not depend on the network; the cheap one keeps tests fast


def _up(engine, data: bytes, **options):
    return engine.upscale_bytes(data, model=options.pop("model", FAST), **options)


def test_exif_orientation_applied_and_metadata_kept(engine, astronaut, tools) -> None:
    photo = Image.fromarray(tools.crop(astronaut, 24, 40))  # 40 wide, 24 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    exif[0x010F] = "UpscalerTestCam"  # Make
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = tools.encode(photo, "JPEG", quality=95, exif=exif.tobytes(), icc_profile=srgb)

    result = _up(engine, data, scale=2.0)
    out = tools.decode(result.data)
    assert (result.format, out.format) == ("jpeg", "JPEG")
    assert out.size == (48, 80) == (result.output_width, result.output_height)  # upright: taller than wide
    assert out.getexif()[0x0112] == 1 and out.getexif()[0x010F] == "UpscalerTestCam"
    assert out.info.get("icc_profile") == srgb
    upright = np.asarray(photo.transpose(Image.Transpose.ROTATE_270).resize((48, 80), Image.Resampling.LANCZOS))
    assert tools.psnr(np.asarray(out), upright) > 22  # same content, same way up (a wrong rotation scores ~12)


def _disk_rgba(size: int = 32) -> Image.Image:
    """An opaque red disk on a fully transparent BLACK background, antialiased edge via supersampling."""
    big = Image.new("RGBA", (size * 4, size * 4), (0, 0, 0, 0))
    ImageDraw.Draw(big).ellipse((16, 16, size * 4 - 16, size * 4 - 16), fill=(220, 30, 30, 255))
    return big.resize((size, size), Image.Resampling.BOX)


def test_rgba_alpha_kept_without_dark_fringe(engine, tools) -> None:
    source = _disk_rgba()
    out = tools.decode(_up(engine, tools.encode(source, "PNG")).data)
    assert out.mode == "RGBA" and out.size == (128, 128)
    rgba = np.asarray(out).astype(int)
    alpha = rgba[..., 3]
    assert alpha[0, 0] == 0 and alpha[64, 64] == 255
    visible = alpha > 25  # every pixel a viewer would see, the antialiased edge included
    red, green, blue = rgba[..., 0][visible], rgba[..., 1][visible], rgba[..., 2][visible]
    assert red.min() >= 180, "dark fringe: black under the transparent pixels leaked into the edge"
    assert green.max() <= 70 and blue.max() <= 70, "coloured fringe"
    # the upscaled coverage, averaged back over each 4x4 block, is the input coverage (interpolation
    # redistributes a little across the 1 px antialiased edge only)
    back = alpha.reshape(32, 4, 32, 4).mean(axis=(1, 3))
    source_alpha = np.asarray(source.getchannel("A")).astype(int)
    assert np.abs(back - source_alpha).mean() <= 4
    assert abs(back.sum() / source_alpha.sum() - 1) <= 0.01


def test_gray_with_alpha_stays_gray_with_alpha(engine, tools) -> None:
    source = _disk_rgba().convert("LA")
    out = tools.decode(_up(engine, tools.encode(source, "PNG"), scale=2.0).data)
    assert out.mode == "LA" and out.size == (64, 64)
    la = np.asarray(out)
    assert la[0, 0, 1] == 0 and la[32, 32, 1] == 255


def test_palette_with_transparency_keeps_transparency_and_colours(engine, tools) -> None:
    source = _disk_rgba().quantize(colors=8)
    source.info["transparency"] = source.getpixel((0, 0))
    data = tools.encode(source, "PNG", transparency=source.getpixel((0, 0)))
    out = tools.decode(_up(engine, data, scale=2.0).data)
    assert out.mode == "RGBA"
    rgba = np.asarray(out).astype(int)
    assert rgba[0, 0, 3] == 0 and rgba[32, 32, 3] == 255
    assert abs(rgba[32, 32, 0] - 220) <= 6 and rgba[32, 32, 1] <= 40


def test_palette_without_transparency_becomes_true_colour(engine, astronaut, tools) -> None:
    source = Image.fromarray(tools.crop(astronaut, 24, 24)).quantize(colors=16)
    out = tools.decode(_up(engine, tools.encode(source, "PNG"), scale=1.0).data)
    assert out.mode == "RGB" and out.size == (24, 24)
    assert tools.psnr(np.asarray(out), np.asarray(source.convert("RGB"))) > 22


def test_grayscale_in_grayscale_out(engine, astronaut, tools) -> None:
    gray = Image.fromarray(tools.crop(astronaut, 24, 24)).convert("L")
    out = tools.decode(_up(engine, tools.encode(gray, "JPEG", quality=95)).data)
    assert out.mode == "L" and out.size == (96, 96)


def _read_png16(data: bytes) -> tuple[np.ndarray, dict]:
    width, height, rows, info = png.Reader(bytes=data).asDirect()
    return np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(height, width, -1), info


@pytest.mark.parametrize("greyscale", [True, False])
def test_16_bit_png_stays_16_bit_without_8_bit_quantization(engine, tools, greyscale) -> None:
    # two flat halves 96/65535 apart: quantizing to 8 bits first would make them equal (or 257 apart)
    planes = 1 if greyscale else 3
    image = np.full((24, 24, planes), 30_000, dtype=np.uint16)
    image[:, 12:] += 96
    stream = io.BytesIO()
    png.Writer(24, 24, greyscale=greyscale, bitdepth=16).write(stream, image.reshape(24, -1).tolist())
    result = _up(engine, stream.getvalue(), scale=2.0)
    out, info = _read_png16(result.data)
    assert info["bitdepth"] == 16 and info["greyscale"] == greyscale and out.shape == (48, 48, planes)
    left, right = out[8:40, 2:18].astype(int), out[8:40, 30:46].astype(int)
    assert abs(int(np.median(right)) - int(np.median(left)) - 96) <= 24
    assert abs(int(np.median(left)) - 30_000) <= 2 * 257


def test_cmyk_converted_to_the_right_colours(engine, tools) -> None:
    cmyk = Image.new("CMYK", (24, 24), (255, 0, 255, 0))  # cyan + yellow = green
    out = tools.decode(_up(engine, tools.encode(cmyk, "JPEG", quality=95), scale=1.0).data)
    assert out.mode == "RGB"
    centre = np.asarray(out)[8:16, 8:16].reshape(-1, 3).mean(axis=0)
    expected = np.asarray(cmyk.convert("RGB"))[12, 12]
    assert np.abs(centre - expected).max() <= 6 and centre[1] > 200 and centre[0] < 40


@pytest.mark.slow
@pytest.mark.parametrize(("model", "colour"), [
    (FAST, (255, 0, 0)), (FAST, (0, 255, 0)), (FAST, (0, 0, 255)), (FAST, (235, 140, 40)), (FAST, (128, 128, 128)),
    ("x4plus", (0, 255, 0)), ("x4plus", (235, 140, 40)),
])
def test_pure_colour_keeps_its_colour(engine, tools, model, colour) -> None:
    data = tools.encode(Image.new("RGB", (12, 12), colour), "PNG")
    out = np.asarray(tools.decode(_up(engine, data, model=model).data)).astype(int)
    assert np.abs(out - np.array(colour)).max() <= 2


@pytest.mark.parametrize("scale", [1.0, 2.5, 3.0, 4.0])
def test_any_scale_between_1_and_4(engine, astronaut, tools, scale) -> None:
    data = tools.encode(Image.fromarray(tools.crop(astronaut, 18, 26)), "PNG")
    result = _up(engine, data, scale=scale)
    assert tools.decode(result.data).size == (round(26 * scale), round(18 * scale))
    assert (result.output_width, result.output_height) == (round(26 * scale), round(18 * scale))


@pytest.mark.parametrize("scale", [0.5, 4.5, float("nan")])
def test_scale_out_of_range_is_refused(engine, tools, scale) -> None:
    with pytest.raises(EngineError, match="scale"):
        _up(engine, tools.encode(Image.new("RGB", (8, 8)), "PNG"), scale=scale)


@pytest.mark.parametrize(("source", "requested", "expected"), [
    ("JPEG", None, "jpeg"), ("PNG", None, "png"), ("WEBP", None, "webp"), ("BMP", None, "png"),
    ("PNG", "jpeg", "jpeg"), ("JPEG", "webp", "webp"),
])
def test_output_format_follows_input_unless_asked(engine, astronaut, tools, source, requested, expected) -> None:
    data = tools.encode(Image.fromarray(tools.crop(astronaut, 16, 16)), source)
    result = _up(engine, data, scale=2.0, output_format=requested)
    assert result.format == expected and tools.decode(result.data).format == expected.upper()
    assert result.content_type == f"image/{expected}"


def test_jpeg_quality_is_applied(engine, astronaut, tools) -> None:
    data = tools.encode(Image.fromarray(tools.crop(astronaut, 24, 24)), "JPEG", quality=90)
    low, high = _up(engine, data, quality=40), _up(engine, data)
    assert len(low.data) < len(high.data)
    assert engine.settings.jpeg_quality == 95


def test_webp_larger_than_its_limit_fails_clearly_before_inference(engine, tools) -> None:
    data = tools.encode(Image.new("RGB", (4100, 8)), "WEBP")
    with pytest.raises(OutputNotEncodableError, match="16383"):
        _up(engine, data, progress=lambda done, total: pytest.fail("inference started"))


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_undecodable_input_raises_a_permanent_error(engine, data) -> None:
    with pytest.raises(UndecodableImageError) as info:
        _up(engine, data)
    assert info.value.permanent


def test_webp_beyond_what_its_encoder_holds_fails_clearly_before_inference(engine, tools) -> None:
    data = tools.encode(Image.new("RGB", (3000, 3000)), "WEBP")  # 144 MP at 4x
    with pytest.raises(OutputNotEncodableError, match="134 MP"):
        _up(engine, data, progress=lambda done, total: pytest.fail("inference started"))
