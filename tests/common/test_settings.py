import pytest

from common.settings import Settings, SettingsError


def test_defaults_are_valid_and_round_trip_through_env():
    s = Settings.from_env({})
    assert s.max_input_pixels == 16_777_216
    again = Settings.from_env(s.to_env())
    assert again == s


def test_environment_overrides_are_typed():
    s = Settings.from_env({"UPSCALER_MAX_UPLOAD_BYTES": "1024", "UPSCALER_DEFAULT_SCALE": "2.5",
                           "UPSCALER_ACCEPT_ANIMATED_FIRST_FRAME": "true", "AWS_REGION": "eu-west-1"})
    assert s.max_upload_bytes == 1024
    assert s.default_scale == 2.5
    assert s.accept_animated_first_frame is True
    assert s.region == "eu-west-1"


@pytest.mark.parametrize("env", [
    {"UPSCALER_MAX_UPLOAD_BYTES": "lots"},
    {"UPSCALER_UPLOAD_PREFIX": "uploads"},
    {"UPSCALER_DEFAULT_SCALE": "8"},
    {"UPSCALER_JOB_BACKEND": "lambda"},
    {"UPSCALER_PRESIGNED_URL_EXPIRY_SECONDS": "999999"},
    {"UPSCALER_ACCEPT_ANIMATED_FIRST_FRAME": "maybe"},
])
def test_invalid_values_fail_with_the_variable_named(env):
    with pytest.raises(SettingsError):
        Settings.from_env(env)
