"""S3-via-SQS event parsing, user-metadata options and key mapping."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from common.contract import JobOptions, ModelName, OutputFormat
from common.keys import output_key_for, rejected_key_for
from common.settings import Settings
from functions.intake.options import InvalidOption, parse_options
from functions.intake.s3_events import MalformedEventError, parse_body

SETTINGS = Settings()


@pytest.mark.parametrize("key", [
    "uploads/plain.jpg",
    "uploads/with space.jpg",
    "uploads/a+b=c&d.png",
    "uploads/ünïcødé/фото 東京.webp",
    "uploads/literally%2Fpercent.jpg",
    "uploads/deep/er/path/x.jpeg",
])
def test_keys_are_decoded_exactly(events: SimpleNamespace, key: str) -> None:
    obj = {"key": key, "size": 10, "eTag": "abc", "versionId": "v1"}
    body = json.dumps({"Records": [events.s3_record(obj)]})
    (upload,) = parse_body(body)
    assert upload.key == key
    assert (upload.bucket, upload.size, upload.etag, upload.version_id) == ("upscaler-input-test", 10, "abc", "v1")


def test_test_event_and_non_create_events_yield_nothing(events: SimpleNamespace) -> None:
    assert parse_body(json.dumps(events.test_event_body)) == []
    obj = {"key": "uploads/x.jpg", "size": 1, "eTag": "e"}
    assert parse_body(json.dumps({"Records": [events.s3_record(obj, event_name="ObjectRemoved:Delete")]})) == []


def test_multipart_event_and_missing_version(events: SimpleNamespace) -> None:
    obj = {"key": "uploads/big.jpg", "size": 123, "eTag": "d41d8cd98f00b204e9800998ecf8427e-2"}
    (upload,) = parse_body(json.dumps({"Records": [
        events.s3_record(obj, event_name="ObjectCreated:CompleteMultipartUpload")]}))
    assert upload.version_id is None
    assert upload.event_name == "ObjectCreated:CompleteMultipartUpload"


@pytest.mark.parametrize("body", ["not json", "[1, 2]", json.dumps({"hello": "world"}),
                                  json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]})])
def test_malformed_bodies_raise(body: str) -> None:
    with pytest.raises(MalformedEventError):
        parse_body(body)


def test_options_default_from_settings() -> None:
    assert parse_options({}, SETTINGS) == JobOptions(ModelName.X4PLUS, 4.0, None)
    custom = SETTINGS.replace(default_model="animevideov3", default_scale=2.0, default_output_format="webp")
    assert parse_options({}, custom) == JobOptions(ModelName.ANIMEVIDEOV3, 2.0, OutputFormat.WEBP)


@pytest.mark.parametrize(("metadata", "expected"), [
    ({"model": "x4plus-anime"}, JobOptions(ModelName.X4PLUS_ANIME, 4.0, None)),
    ({"model": " AnimeVideoV3 ", "scale": "2"}, JobOptions(ModelName.ANIMEVIDEOV3, 2.0, None)),
    ({"scale": "2.5x", "format": "JPG"}, JobOptions(ModelName.X4PLUS, 2.5, OutputFormat.JPEG)),
    ({"scale": "1", "format": "webp"}, JobOptions(ModelName.X4PLUS, 1.0, OutputFormat.WEBP)),
    ({"Format": "png", "unrelated": "ignored"}, JobOptions(ModelName.X4PLUS, 4.0, OutputFormat.PNG)),
    ({"model": "photo-jpeg", "strength": "0.6"}, JobOptions(ModelName.PHOTO_JPEG, 4.0, None, 0.6)),
    ({"model": "Illustration-Denoise", "scale": "2", "strength": "75%"},
     JobOptions(ModelName.ILLUSTRATION_DENOISE, 2.0, None, 0.75)),
    ({"strength": "0"}, JobOptions(ModelName.X4PLUS, 4.0, None, 0.0)),
])
def test_valid_options(metadata: dict[str, str], expected: JobOptions) -> None:
    assert parse_options(metadata, SETTINGS) == expected


@pytest.mark.parametrize(("metadata", "name"), [
    ({"model": "x8-ultra"}, "model"),
    ({"scale": "8"}, "scale"),
    ({"scale": "0.5"}, "scale"),
    ({"scale": "nan"}, "scale"),
    ({"scale": "big"}, "scale"),
    ({"format": "gif"}, "format"),
    ({"strength": "1.5"}, "strength"),
    ({"strength": "-10%"}, "strength"),
    ({"strength": "nan"}, "strength"),
    ({"strength": "soft"}, "strength"),
])
def test_invalid_options_explain_themselves(metadata: dict[str, str], name: str) -> None:
    found = parse_options(metadata, SETTINGS)
    assert isinstance(found, InvalidOption)
    assert found.name == name
    assert f"x-amz-meta-{name}" in found.message


@pytest.mark.parametrize(("key", "fmt", "expected"), [
    ("uploads/cat.png", OutputFormat.PNG, "outputs/cat.png"),
    ("uploads/cat.jpeg", OutputFormat.JPEG, "outputs/cat.jpg"),
    ("uploads/a/b/cat.photo.JPG", OutputFormat.WEBP, "outputs/a/b/cat.photo.webp"),
    ("uploads/no-extension", OutputFormat.PNG, "outputs/no-extension.png"),
    ("uploads/.hidden", OutputFormat.PNG, "outputs/.hidden.png"),
    ("uploads/dir.v2/file", OutputFormat.JPEG, "outputs/dir.v2/file.jpg"),
    ("uploads/with space+plus.jpg", OutputFormat.JPEG, "outputs/with space+plus.jpg"),
])
def test_output_key(key: str, fmt: OutputFormat, expected: str) -> None:
    assert output_key_for(key, fmt, SETTINGS) == expected


def test_rejected_key_keeps_the_relative_path() -> None:
    assert rejected_key_for("uploads/a/b c.jpg", SETTINGS) == "rejected/a/b c.jpg"


def test_an_invalid_option_keeps_what_was_asked() -> None:
    from functions.intake.options import AskedOptions, asked_options

    unknown = parse_options({"model": "x8-ultra", "scale": "2x"}, SETTINGS)
    assert isinstance(unknown, InvalidOption)
    assert asked_options(unknown) == AskedOptions(model="x8-ultra", scale=2.0, strength=1.0)
    too_big = parse_options({"scale": "16", "strength": "50%"}, SETTINGS)
    assert isinstance(too_big, InvalidOption) and too_big.name == "scale"
    assert asked_options(too_big) == AskedOptions(model="x4plus", scale=None, strength=0.5)
    valid = parse_options({"model": "photo-jpeg", "scale": "3"}, SETTINGS)
    assert asked_options(valid) == AskedOptions(model="photo-jpeg", scale=3.0, strength=1.0)


def test_the_cli_spelling_names_its_own_options() -> None:
    from functions.intake.options import CLI_OPTION

    found = parse_options({"strength": "150%"}, SETTINGS, label=CLI_OPTION)
    assert isinstance(found, InvalidOption) and "--strength" in found.message and "x-amz-meta" not in found.message
    assert parse_options({"strength": "50%"}, SETTINGS, label=CLI_OPTION).strength == 0.5  # type: ignore[union-attr]
