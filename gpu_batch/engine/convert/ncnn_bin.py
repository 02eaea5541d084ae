"""Reader for ncnn `.bin` weight files.

The file has no header: weights of the layers that have any follow each other in `.param` order.
Each weight array ncnn loads with `type 0` starts with a 4-byte tag that says how it is stored;
arrays loaded with `type 1` (biases, PReLU slopes) are raw float32 with no tag.
"""

from __future__ import annotations

import struct

import numpy as np

TAG_FP16 = 0x01306B47  # bytes 47 6B 30 01: float16 values follow
TAG_FP32 = 0x0002C056  # raw float32 values follow
TAG_RAW = 0x00000000  # legacy: raw float32 values follow


class WeightFormatError(ValueError):
    """The `.bin` file does not hold the weights the `.param` file describes."""


class WeightReader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._offset

    def _take(self, size: int) -> bytes:
        if size > self.remaining:
            raise WeightFormatError(f"weights end early: need {size} bytes at {self._offset}, {self.remaining} left")
        chunk = self._data[self._offset : self._offset + size]
        self._offset += size
        return chunk

    def raw_float32(self, count: int) -> np.ndarray:
        """An untagged float32 array (ncnn ModelBin type 1)."""
        return np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)

    def tagged(self, count: int) -> np.ndarray:
        """A tagged array (ncnn ModelBin type 0), returned as float32 (fp16 widens exactly)."""
        (tag,) = struct.unpack("<I", self._take(4))
        if tag == TAG_FP16:
            values = np.frombuffer(self._take(2 * count), dtype="<f2").astype(np.float32)
            self._take((-2 * count) % 4)  # ncnn aligns every array to 4 bytes
            return values
        if tag in (TAG_FP32, TAG_RAW):
            return self.raw_float32(count)
        raise WeightFormatError(f"unsupported weight storage tag 0x{tag:08X} at offset {self._offset - 4}")
