"""Per-upload options from S3 user metadata (x-amz-meta-model, -scale, -format, -strength), with defaults.

An option a person got wrong is a rejection with a sentence they can act on, never a crash.
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


@dataclass(frozen=True, slots=True)
class InvalidOption:
    """Why the metadata could not be turned into options (becomes an INVALID_OPTION rejection)."""

    name: str
    value: str
    message: str


def default_options(settings: Settings) -> JobOptions:
    fmt = settings.default_output_format
    return JobOptions(
        model=ModelName(settings.default_model),
        scale=float(settings.default_scale),
        output_format=_parse_format(fmt) if fmt else None,
    )


def parse_options(metadata: Mapping[str, str], settings: Settings) -> JobOptions | InvalidOption:
    """JobOptions from S3 user metadata (keys as boto3 returns them: lower case, no prefix)."""
    meta = {k.lower(): v.strip() for k, v in metadata.items()}
    defaults = default_options(settings)

    model = defaults.model
    if meta.get(MODEL_KEY):
        try:
            model = ModelName(meta[MODEL_KEY].lower())
        except ValueError:
            choices = ", ".join(m.value for m in ModelName)
            return InvalidOption(MODEL_KEY, meta[MODEL_KEY],
                                 f"Unknown model {meta[MODEL_KEY]!r} in x-amz-meta-model; choose one of {choices}.")

    scale = defaults.scale
    if meta.get(SCALE_KEY):
        raw = meta[SCALE_KEY].lower().removesuffix("x")
        try:
            scale = float(raw)
        except ValueError:
            scale = math.nan
        if not scale_in_range(scale):  # also false for NaN
            return InvalidOption(SCALE_KEY, meta[SCALE_KEY],
                                 f"Scale {meta[SCALE_KEY]!r} in x-amz-meta-scale is not a number from "
                                 f"{MIN_SCALE:g} to {MAX_SCALE:g} (for example 2 or 4).")

    output_format = defaults.output_format
    if meta.get(FORMAT_KEY):
        output_format = _parse_format(meta[FORMAT_KEY])
        if output_format is None:
            choices = ", ".join(f.value for f in OutputFormat)
            return InvalidOption(FORMAT_KEY, meta[FORMAT_KEY],
                                 f"Unknown output format {meta[FORMAT_KEY]!r} in x-amz-meta-format; "
                                 f"choose one of {choices}.")

    strength = 1.0
    if meta.get(STRENGTH_KEY):
        strength = _parse_strength(meta[STRENGTH_KEY])
        if not strength_in_range(strength):  # also false for NaN
            return InvalidOption(STRENGTH_KEY, meta[STRENGTH_KEY],
                                 f"Strength {meta[STRENGTH_KEY]!r} in x-amz-meta-strength is not a number from "
                                 f"{MIN_STRENGTH:g} to {MAX_STRENGTH:g} (or 0% to 100%); lower keeps more of "
                                 f"the original.")

    return JobOptions(model=model, scale=scale, output_format=output_format, strength=strength)


def _parse_strength(raw: str) -> float:
    """'0.6' or '60%' -> 0.6; NaN when it is not a number."""
    text = raw.strip()
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        return math.nan


def _parse_format(raw: str) -> OutputFormat | None:
    text = raw.strip().lower().lstrip(".")
    if text in _FORMAT_ALIASES:
        return _FORMAT_ALIASES[text]
    try:
        return OutputFormat(text)
    except ValueError:
        return None
