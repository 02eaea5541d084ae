"""Parser for ncnn `.param` text files (magic 7767517)."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from pathlib import Path

NCNN_MAGIC = 7767517
ARRAY_KEY_BASE = -23300  # a key <= -23300 holds an array; its id is -(key) - 23300

ParamValue = int | float | tuple[float, ...]


class ParamFormatError(ValueError):
    """The `.param` file is not a valid ncnn network description."""


@dataclass(frozen=True, slots=True)
class Layer:
    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, ParamValue] = field(default_factory=dict)

    def get(self, key: int, default: ParamValue) -> ParamValue:
        return self.params.get(key, default)

    # Named after the value types they return: inside the class body `int` is then this method, hence builtins.
    def int(self, key: builtins.int, default: builtins.int) -> builtins.int:
        return int(self.params.get(key, default))  # type: ignore[arg-type]

    def float(self, key: builtins.int, default: builtins.float) -> builtins.float:
        return float(self.params.get(key, default))  # type: ignore[arg-type]

    def array(self, key: builtins.int) -> tuple[builtins.float, ...]:
        value = self.params.get(key, ())
        return value if isinstance(value, tuple) else (float(value),)


def _scalar(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _parse_params(tokens: list[str], where: str) -> dict[int, ParamValue]:
    params: dict[int, ParamValue] = {}
    for token in tokens:
        key_text, sep, value_text = token.partition("=")
        if not sep:
            raise ParamFormatError(f"{where}: expected key=value, got {token!r}")
        key = int(key_text)
        if key <= ARRAY_KEY_BASE:
            count_text, *items = value_text.split(",")
            if int(count_text) != len(items):
                raise ParamFormatError(f"{where}: array {token!r} declares {count_text} items, has {len(items)}")
            params[-key + ARRAY_KEY_BASE] = tuple(float(v) for v in items)
        else:
            params[key] = _scalar(value_text)
    return params


def parse_param(text: str) -> list[Layer]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != str(NCNN_MAGIC):
        raise ParamFormatError("missing ncnn magic number 7767517")
    layer_count, _blob_count = (int(v) for v in lines[1].split())
    layers: list[Layer] = []
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if len(parts) < 4:
            raise ParamFormatError(f"line {number}: too few fields")
        layer_type, name = parts[0], parts[1]
        n_in, n_out = int(parts[2]), int(parts[3])
        rest = parts[4:]
        inputs, outputs = tuple(rest[:n_in]), tuple(rest[n_in : n_in + n_out])
        if len(outputs) != n_out:
            raise ParamFormatError(f"line {number}: layer {name} lists too few blobs")
        layers.append(Layer(layer_type, name, inputs, outputs, _parse_params(rest[n_in + n_out :], f"line {number}")))
    if len(layers) != layer_count:
        raise ParamFormatError(f"header says {layer_count} layers, found {len(layers)}")
    return layers


def load_param(path: Path) -> list[Layer]:
    return parse_param(path.read_text(encoding="ascii"))
