"""Read a GGUF file's metadata, and add keys to it, in pure Python.

lokal reads a GGUF's header before llama.cpp ever sees the file: to detect the model's profile
without importing llama_cpp, and to turn a truncated or malformed file into a clear
:class:`~lokal.errors.ModelLoadError` instead of a crash deep in C. Only the key/value section
and the tensor table are parsed; tensor data is never read.

Format reference: llama.cpp ``docs/gguf.md`` (version 2 and 3, little-endian).
"""

from __future__ import annotations

import math
import os
import shutil
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from lokal.errors import ModelLoadError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# value type -> struct format for scalars
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_BOOL, _STRING, _ARRAY = 7, 8, 9
# Arrays longer than this (tokenizer vocabularies) are summarised, not kept.
_KEEP_ARRAY = 64
# Sanity limits: a header claiming more than this is malformed, not a model.
_MAX_KV = 1_000_000
_MAX_TENSORS = 10_000_000
_MAX_STRING = 64 * 1024 * 1024


class _Reader:
    def __init__(self, fh: BinaryIO, path: Path) -> None:
        self.fh = fh
        self.path = path

    def take(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            msg = f"{self.path} is not a complete GGUF file (ends inside its header)"
            raise ModelLoadError(msg)
        return data

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar("<Q")
        if n > _MAX_STRING:
            msg = f"{self.path}: malformed GGUF (a string of {n} bytes in the header)"
            raise ModelLoadError(msg)
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type = self.scalar("<I")
            count = self.scalar("<Q")
            if count > _MAX_STRING:
                msg = f"{self.path}: malformed GGUF (an array of {count} items)"
                raise ModelLoadError(msg)
            if item_type in _SCALARS and count > _KEEP_ARRAY:
                self.take(struct.calcsize(_SCALARS[item_type]) * count)
                return _Summary(count)
            items = [self.value(item_type) for _ in range(count)]
            return items if count <= _KEEP_ARRAY else _Summary(count)
        msg = f"{self.path}: malformed GGUF (unknown value type {vtype})"
        raise ModelLoadError(msg)


class _Summary(int):
    """Length of an array too long to keep (for example a tokenizer vocabulary)."""


def _header(r: _Reader) -> tuple[int, int, int]:
    if r.take(4) != MAGIC:
        msg = f"{r.path} is not a GGUF file (bad magic bytes)"
        raise ModelLoadError(msg)
    version = r.scalar("<I")
    if version not in (2, 3):
        msg = f"{r.path}: unsupported GGUF version {version}"
        raise ModelLoadError(msg)
    n_tensors, n_kv = r.scalar("<Q"), r.scalar("<Q")
    if n_kv > _MAX_KV or n_tensors > _MAX_TENSORS:
        msg = f"{r.path}: malformed GGUF header ({n_tensors} tensors, {n_kv} keys)"
        raise ModelLoadError(msg)
    return version, n_tensors, n_kv


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The key/value metadata of a GGUF file. Long arrays are replaced by their length.

    Raises :class:`ModelLoadError` for a file that is not a well-formed GGUF.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            r = _Reader(fh, p)
            _version, n_tensors, n_kv = _header(r)
            meta: dict[str, Any] = {}
            for _ in range(n_kv):
                key = r.string()
                meta[key] = r.value(r.scalar("<I"))
            _check_tensor_table(r, n_tensors, p)
            return meta
    except OSError as exc:
        msg = f"cannot read {p}: {exc}"
        raise ModelLoadError(msg) from exc


def _check_tensor_table(r: _Reader, n_tensors: int, path: Path) -> None:
    """Walk the tensor table; every tensor's data must lie inside the file."""
    entries = []
    for _ in range(n_tensors):
        r.string()
        n_dims = r.scalar("<I")
        if n_dims > 8:
            msg = f"{path}: malformed GGUF (a tensor with {n_dims} dimensions)"
            raise ModelLoadError(msg)
        r.take(8 * n_dims)
        r.scalar("<I")
        entries.append(r.scalar("<Q"))
    size = os.fstat(r.fh.fileno()).st_size
    if entries and max(entries) >= size:
        msg = f"{path} is truncated: tensor data points past the end of the file ({size} bytes)"
        raise ModelLoadError(msg)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    #: ggml order: dims[0] is the row length.
    dims: tuple[int, ...]
    ggml_type: int
    #: Absolute offset of the data in the file.
    offset: int


def read_tensor_table(path: str | Path) -> dict[str, TensorInfo]:
    """Name, shape, type and file offset of every tensor in a GGUF (no data is read)."""
    p = Path(path)
    with p.open("rb") as fh:
        r = _Reader(fh, p)
        _version, n_tensors, n_kv = _header(r)
        alignment = DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key = r.string()
            value = r.value(r.scalar("<I"))
            if key == "general.alignment":
                alignment = int(value)
        raw = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.scalar("<I")
            dims = tuple(int(r.scalar("<Q")) for _ in range(n_dims))
            raw.append((name, dims, int(r.scalar("<I")), int(r.scalar("<Q"))))
        data_start = -(-fh.tell() // alignment) * alignment
    return {n: TensorInfo(n, d, t, data_start + o) for n, d, t, o in raw}


def parameter_count(path: str | os.PathLike[str]) -> int:
    """Parameters in a GGUF: the product of each tensor's dimensions, summed (no data read)."""
    tensors = read_tensor_table(Path(path))
    return sum(math.prod(t.dims, start=1) for t in tensors.values())


def _encode_string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _encode_item(key: str, value: str | bool) -> bytes:
    if isinstance(value, bool):  # GGUF type 7: one byte
        return _encode_string(key) + struct.pack("<IB", _BOOL, int(value))
    return _encode_string(key) + struct.pack("<I", _STRING) + _encode_string(value)


def add_metadata(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], items: Mapping[str, str | bool]
) -> None:
    """Copy ``src`` to ``dst`` with extra string (or bool) keys in its metadata (replacing
    same-named keys).

    Tensor data offsets are relative to the data section, so adding keys only means rewriting
    the header and re-padding to the file's alignment; the tensor data is copied byte for byte.
    """
    src_p, dst_p = Path(src), Path(dst)
    meta = read_metadata(src_p)
    alignment = int(meta.get("general.alignment", DEFAULT_ALIGNMENT))
    with src_p.open("rb") as fh:
        r = _Reader(fh, src_p)
        version, n_tensors, n_kv = _header(r)
        kv_blobs: list[tuple[str, bytes]] = []
        for _ in range(n_kv):
            start = fh.tell()
            key = r.string()
            r.value(r.scalar("<I"))
            end = fh.tell()
            fh.seek(start)
            kv_blobs.append((key, fh.read(end - start)))
        tensors_start = fh.tell()
        _check_tensor_table(r, n_tensors, src_p)
        tensors_end = fh.tell()
        fh.seek(tensors_start)
        tensor_table = fh.read(tensors_end - tensors_start)
        data_start = -(-tensors_end // alignment) * alignment

        kept = [blob for key, blob in kv_blobs if key not in items]
        added = [_encode_item(k, v) for k, v in items.items()]
        header = (
            MAGIC
            + struct.pack("<I", version)
            + struct.pack("<QQ", n_tensors, len(kept) + len(added))
            + b"".join(kept)
            + b"".join(added)
            + tensor_table
        )
        header += b"\0" * (-len(header) % alignment)
        tmp = dst_p.with_name(dst_p.name + ".tmp")
        with tmp.open("wb") as out:
            out.write(header)
            fh.seek(data_start)
            shutil.copyfileobj(fh, out, 16 * 1024 * 1024)
        tmp.replace(dst_p)
