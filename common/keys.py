"""Where an upload's output and its rejected copy are written: one derivation for every part.

S3 keys are at most 1024 bytes of UTF-8. An upload key near that limit can produce a longer derived
key (`rejected/` is one byte longer than `uploads/`, `photo` becomes `photo.webp`), and a copy to a key
S3 refuses would make the rejection fail on every retry. Such keys are shortened deterministically
(`fit_key`) rather than refused: the same upload always maps to the same key, different uploads to
different keys (a hash of the full name), and the notification carries the key actually written.
"""

from __future__ import annotations

import hashlib

from common.contract import OutputFormat
from common.formats import EXTENSIONS
from common.settings import Settings

S3_MAX_KEY_BYTES = 1024  # UTF-8 bytes
_HASH_DIGITS = 16


def relative_key(key: str, settings: Settings) -> str:
    """The upload's key below the upload prefix."""
    return key[len(settings.upload_prefix):] if key.startswith(settings.upload_prefix) else key


def output_key_for(key: str, output_format: OutputFormat, settings: Settings) -> str:
    """outputs/<key relative to the upload prefix, extension replaced by the output format's>."""
    rel = relative_key(key, settings)
    folder, _, name = rel.rpartition("/")
    stem, dot, _ext = name.rpartition(".")
    base = stem if dot and stem else name
    return fit_key(settings.output_prefix, f"{folder + '/' if folder else ''}{base}", EXTENSIONS[output_format])


def rejected_key_for(key: str, settings: Settings) -> str:
    """rejected/<key relative to the upload prefix> (shortened by `fit_key` when that is too long)."""
    return fit_key(settings.rejected_prefix, relative_key(key, settings))


def fit_key(prefix: str, body: str, suffix: str = "") -> str:
    """`prefix + body + suffix`, or, past S3_MAX_KEY_BYTES, `body` cut to fit and ended with `~<hash>`.

    The cut is at a UTF-8 character boundary; the hash (16 hex digits of the SHA-256 of the whole
    body) keeps two long names that share their first ~1000 bytes apart.
    """
    key = prefix + body + suffix
    if _utf8_len(key) <= S3_MAX_KEY_BYTES:
        return key
    tag = "~" + hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_DIGITS]
    room = S3_MAX_KEY_BYTES - _utf8_len(prefix + tag + suffix)
    if room < 0:
        raise ValueError(f"prefix {prefix!r} and suffix {suffix!r} leave no room in an S3 key")
    cut = body.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")  # drops a split character
    return prefix + cut + tag + suffix


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))
