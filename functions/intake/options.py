"""Per-upload options, with defaults: the one parser for S3 user metadata (x-amz-meta-model, -scale, -format,
-strength) and for the CLI's --model, --scale, --format and --strength.

An option a person got wrong is a rejection with a sentence they can act on, never a crash, and the
rejection reports the options as they were given, never a default that would have run instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from common.contract import MAX_STRENGTH, MIN_STRENGTH, JobOptions, ModelName, OutputFormat, strength_in_range
from common.formats import MAX_SCALE, MIN_SCALE, scale_in_range
from common.settings import Settings

MODEL_KEY = "model"
SCALE_KEY = "scale"
FORMAT_KEY = "format"
STRENGTH_KEY = "strength"
_FORMAT_ALIASES = {"jpg": OutputFormat.JPEG, "jpe": OutputFormat.JPEG, "tif": OutputFormat.TIFF}
# How a message names an option: where it came from.
METADATA_OPTION = "x-amz-meta-{}"
CLI_OPTION = "--{}"


@dataclass(frozen=True, slots=True)
class AskedOptions:
    """The options as the upload asked for them, for a rejection to report. `model` is the name as given
    (an unknown one too); `scale` and `strength` are None where what was given is not a number in range
    (the message says what it was)."""

    model: str
    scale: float | None
    strength: float | None


@dataclass(frozen=True, slots=True)
class InvalidOption:
    """Why the metadata could not be turned into options (becomes an INVALID_OPTION rejection)."""

    name: str
    value: str
    message: str
    asked: AskedOptions


def default_options(settings: Settings) -> JobOptions:
    fmt = settings.default_output_format
    return JobOptions(
        model=ModelName(settings.default_model),
        scale=float(settings.default_scale),
        output_format=parse_format(fmt) if fmt else None,
    )


def parse_options(metadata: Mapping[str, str], settings: Settings, *,
                  label: str = METADATA_OPTION) -> JobOptions | InvalidOption:
    """JobOptions from S3 user metadata (keys as boto3 returns them: lower case, no prefix), or from the CLI's
    options under the same keys (`label=CLI_OPTION` names them as the CLI spells them)."""
    meta = {k.lower(): v.strip() for k, v in metadata.items() if v is not None}
    defaults = default_options(settings)
    model_text = meta.get(MODEL_KEY) or str(defaults.model)
    scale = parse_scale(meta[SCALE_KEY]) if meta.get(SCALE_KEY) else defaults.scale
    strength = parse_strength(meta[STRENGTH_KEY]) if meta.get(STRENGTH_KEY) else 1.0
    asked = AskedOptions(model=model_text, scale=scale if scale_in_range(scale) else None,
                         strength=strength if strength_in_range(strength) else None)

    def invalid(key: str, message: str) -> InvalidOption:
        return InvalidOption(key, meta[key], message, asked)

    try:
        model = ModelName(model_text.lower())
    except ValueError:
        choices = ", ".join(m.value for m in ModelName)
        return invalid(MODEL_KEY, f"Unknown model {meta[MODEL_KEY]!r} in {label.format(MODEL_KEY)}; "
                                  f"choose one of {choices}.")
    if asked.scale is None:
        return invalid(SCALE_KEY, f"Scale {meta[SCALE_KEY]!r} in {label.format(SCALE_KEY)} is not a number from "
                                  f"{MIN_SCALE:g} to {MAX_SCALE:g} (for example 2 or 4).")
    output_format = defaults.output_format
    if meta.get(FORMAT_KEY):
        output_format = parse_format(meta[FORMAT_KEY])
        if output_format is None:
            choices = ", ".join(f.value for f in OutputFormat)
            return invalid(FORMAT_KEY, f"Unknown output format {meta[FORMAT_KEY]!r} in {label.format(FORMAT_KEY)}; "
                                       f"choose one of {choices}.")
    if asked.strength is None:
        return invalid(STRENGTH_KEY, f"Strength {meta[STRENGTH_KEY]!r} in {label.format(STRENGTH_KEY)} is not a "
                                     f"number from {MIN_STRENGTH:g} to {MAX_STRENGTH:g} (or 0% to 100%); lower "
                                     f"keeps more of the original.")
    return JobOptions(model=model, scale=scale, output_format=output_format, strength=strength)


def asked_options(parsed: JobOptions | InvalidOption) -> AskedOptions:
    """What a rejection reports: the options as given (valid ones as they will be used)."""
    if isinstance(parsed, InvalidOption):
        return parsed.asked
    return AskedOptions(model=str(parsed.model), scale=parsed.scale, strength=parsed.strength)


def parse_scale(raw: str) -> float:
    """'2', '2.5' or '2x' -> 2.0; NaN when it is not a number (range: common.formats.scale_in_range)."""
    try:
        return float(raw.strip().lower().removesuffix("x"))
    except ValueError:
        return math.nan


def parse_strength(raw: str) -> float:
    """'0.6' or '60%' -> 0.6; NaN when it is not a number (range: common.contract.strength_in_range)."""
    text = raw.strip()
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        return math.nan


def parse_format(raw: str) -> OutputFormat | None:
    """'jpg', '.JPEG', 'tif' ... -> the output format; None when it is not one."""
    text = raw.strip().lower().lstrip(".")
    if text in _FORMAT_ALIASES:
        return _FORMAT_ALIASES[text]
    try:
        return OutputFormat(text)
    except ValueError:
        return None
