"""Read single-file checkpoints safely: safetensors lazily, PyTorch pickles only through `weights_only=True`.

A `StateDict` is a read-only mapping from key to tensor that loads (and casts) each tensor when it is asked
for, so a converter that walks the keys streams the file instead of holding a second full copy.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..fileio import atomic_path

SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024
_SAFETENSORS_DTYPES = {
    "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


class StateDict(Mapping):
    """Key → tensor, each tensor read on access and cast to `dtype` if it is a floating-point tensor."""

    def __init__(self, path: Path, dtype: torch.dtype | None = None):
        self.path = Path(path)
        self.dtype = dtype
        self.metadata: dict[str, str] = {}

    def cast(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.dtype is not None and tensor.is_floating_point() and tensor.dtype != self.dtype:
            return tensor.to(self.dtype)
        return tensor

    def shape(self, key: str) -> tuple[int, ...]:
        raise NotImplementedError

    def stored_dtype(self, key: str) -> torch.dtype:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SafetensorsStateDict(StateDict):
    """safetensors validates the file; each tensor's bytes are then read with `pread` into their own buffer.

    Reading through safetensors' memory map would keep every page read resident until the file is closed — one
    extra copy of the whole checkpoint at the loading peak. Reading by offsets keeps only the tensor in hand.
    """

    def __init__(self, path: Path, dtype: torch.dtype | None = None):
        super().__init__(path, dtype)
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as checked:  # full header validation
                self.metadata = dict(checked.metadata() or {})
        except Exception as err:  # safetensors raises its own error types per version
            raise CheckpointError(path, f"truncated or corrupt safetensors file ({_first_line(err)})") from None
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        header.pop("__metadata__", None)
        self._entries = header
        self._data_start = 8 + header_len
        self._fd = os.open(path, os.O_RDONLY)

    def __getitem__(self, key: str) -> torch.Tensor:
        entry = self._entries.get(key)
        if entry is None:
            raise KeyError(key)
        begin, end = entry["data_offsets"]
        dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise CheckpointError(self.path, f"tensor {key!r} has an unsupported dtype {entry['dtype']}")
        target = self.dtype if self.dtype is not None and dtype.is_floating_point else dtype
        out = torch.empty(entry["shape"], dtype=target)  # not zeroed: every element is written
        if target == dtype:
            self._read_into(out.view(-1).view(torch.uint8), begin, key)
            return out
        # Convert through one reused staging buffer: no stored-dtype copy of the tensor is ever allocated, so
        # loading an fp16 file as fp32 peaks at the fp32 model (and freed buffers cannot fragment the heap).
        flat, step = out.view(-1), max(1, self._STAGING_BYTES // dtype.itemsize)
        staging = self._staging()
        for first in range(0, flat.numel(), step):
            count = min(step, flat.numel() - first)
            chunk = staging[: count * dtype.itemsize]
            self._read_into(chunk, begin + first * dtype.itemsize, key)
            flat[first:first + count].copy_(chunk.view(dtype))
        return out

    _STAGING_BYTES = 16 * 2**20

    def _staging(self) -> torch.Tensor:
        if getattr(self, "_staging_buffer", None) is None:
            self._staging_buffer = torch.empty(self._STAGING_BYTES, dtype=torch.uint8)
        return self._staging_buffer

    def _read_into(self, buffer: torch.Tensor, offset: int, key: str) -> None:
        view, done = memoryview(buffer.numpy()), 0
        while done < len(view):
            n = os.preadv(self._fd, [view[done:]], self._data_start + offset + done)
            if n <= 0:
                raise CheckpointError(self.path, f"truncated safetensors file (tensor {key!r})")
            done += n

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._entries[key]["shape"])

    def stored_dtype(self, key: str) -> torch.dtype:
        return _SAFETENSORS_DTYPES.get(self._entries[key]["dtype"], torch.float32)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        self.close()


class TensorDictStateDict(StateDict):
    """An in-memory dict (from a pickle or built in code) seen through the same lazy-cast interface."""

    def __init__(self, tensors: dict[str, torch.Tensor], path: Path | str = "<memory>", dtype=None, metadata=None):
        super().__init__(Path(path), dtype)
        self._tensors = tensors
        self.metadata = dict(metadata or {})

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.cast(self._tensors[key])

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._tensors[key].shape)

    def stored_dtype(self, key: str) -> torch.dtype:
        return self._tensors[key].dtype

    def __iter__(self):
        return iter(self._tensors)

    def __len__(self):
        return len(self._tensors)

    def __contains__(self, key) -> bool:
        return key in self._tensors


def open_state_dict(path: str | os.PathLike, dtype: torch.dtype | None = None) -> StateDict:
    """Open a `.safetensors`, `.ckpt` or `.pt` file by its content (not its extension)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(path, "file is empty")
    with open(path, "rb") as f:
        head = f.read(16)
    if _looks_like_safetensors(path, head, size):
        return SafetensorsStateDict(path, dtype)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return TensorDictStateDict(_load_pickle_checkpoint(path, is_zip=head.startswith(b"PK")), path, dtype)
    raise CheckpointError(path, "not a model file (neither safetensors nor a PyTorch checkpoint)")


def _looks_like_safetensors(path: Path, head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{":
        return False
    if header_len > SAFETENSORS_MAX_HEADER or 8 + header_len > size:
        raise CheckpointError(path, "truncated safetensors file (header runs past the end of the file)")
    return True


def _load_pickle_checkpoint(path: Path, is_zip: bool) -> dict[str, torch.Tensor]:
    if is_zip and not zipfile.is_zipfile(path):
        raise CheckpointError(path, "truncated or corrupt checkpoint (the zip archive is incomplete)")
    if is_zip:
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise CheckpointError(path, f"truncated or corrupt checkpoint ({_first_line(err)})") from None
        if bad is not None:
            raise CheckpointError(path, f"truncated or corrupt checkpoint (bad member {bad})")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        msg = _first_line(err)
        if "weights only" in msg.lower() or "unsupported global" in msg.lower() or "global" in msg.lower():
            raise CheckpointError(
                path, "refused: this pickle would run code when loaded (only plain tensors are accepted); "
                "use a .safetensors version of the model"
            ) from None
        raise CheckpointError(path, f"truncated or corrupt checkpoint ({msg})") from None
    except Exception as err:  # noqa: BLE001 — torch ≥ 2.13 hands a `.safetensors` name to safetensors' own reader
        raise CheckpointError(path, f"truncated or corrupt checkpoint ({_first_line(err)})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"holds a {type(obj).__name__}, not a state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(path, "contains no tensors")
    return tensors


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:200]


def write_safetensors_atomic(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata=None,
                             overwrite: bool = True) -> None:
    """Write through `fileio.atomic_path`, so a crash never leaves a partial `path`; with `overwrite=False`,
    FileExistsError if `path` exists when the file is complete (an existing file is never replaced)."""
    from safetensors.torch import save

    # serialised here and written into atomic_path's own temp: save_file would write a temp of its own beside it,
    # under a name no later run knows to clean up after a kill
    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
