"""Errors the engine raises; the worker maps them to retryable or permanent job failures."""

from __future__ import annotations


class EngineError(RuntimeError):
    """Upscaling failed (inference error). `permanent` says whether retrying the same input can help."""

    permanent: bool = False


class UndecodableImageError(EngineError):
    """The input can never be decoded as an image: retrying cannot help."""

    permanent = True


class OutputNotEncodableError(EngineError):
    """The result cannot be written in the requested format (e.g. WebP wider than 16383 px)."""

    permanent = True


class EngineOutOfMemoryError(EngineError):
    """Still out of memory after retrying with the smallest tiles (transient: another host may fit it)."""
