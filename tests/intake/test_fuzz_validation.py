"""Property-based fuzz of intake validation: any mutation of a valid image ends in accept or a coded rejection."""

from __future__ import annotations

from fuzzing import FUZZ, any_inputs, seeds
from hypothesis import given

from common.contract import RejectionCode
from common.settings import Settings
from functions.intake.options import default_options
from functions.intake.validation import ImageHeader, NeedMoreBytes, Verdict, read_header, validate_bytes

SETTINGS = Settings()


def test_every_seed_is_accepted() -> None:
    for name, data in seeds().items():
        assert validate_bytes(data, options=default_options(SETTINGS), settings=SETTINGS).accepted, name


@FUZZ
@given(data=any_inputs)
def test_mutated_images_end_in_accept_or_a_coded_rejection(data: bytes) -> None:
    for prefix in (data[:64], data[:1024]):  # the header read, as intake does it on the first bytes
        found = read_header(prefix, complete=len(prefix) == len(data))
        assert isinstance(found, ImageHeader | NeedMoreBytes | Verdict)
    verdict = validate_bytes(data, options=default_options(SETTINGS), settings=SETTINGS)
    if verdict.accepted:
        assert verdict.code is None and verdict.width and verdict.height and verdict.output_format
    else:
        assert isinstance(verdict.code, RejectionCode) and verdict.message
