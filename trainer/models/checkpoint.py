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

SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024
_SAFETENSORS_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


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
    def __init__(self, path: Path, dtype: torch.dtype | None = None):
        super().__init__(path, dtype)
        from safetensors import safe_open

        try:
            self._file = safe_open(str(path), framework="pt", device="cpu")
        except Exception as err:  # safetensors raises its own error types per version
            raise CheckpointError(path, f"truncated or corrupt safetensors file ({_first_line(err)})") from None
        self._keys = list(self._file.keys())
        self.metadata = dict(self._file.metadata() or {})

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys_set:
            raise KeyError(key)
        try:
            return self.cast(self._file.get_tensor(key))
        except Exception as err:
            raise CheckpointError(self.path, f"cannot read tensor {key!r} ({_first_line(err)})") from None

    @property
    def _keys_set(self) -> set[str]:
        if not hasattr(self, "_key_cache"):
            self._key_cache = set(self._keys)
        return self._key_cache

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._file.get_slice(key).get_shape())

    def stored_dtype(self, key: str) -> torch.dtype:
        return _SAFETENSORS_DTYPES.get(self._file.get_slice(key).get_dtype(), torch.float32)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key) -> bool:
        return key in self._keys_set

    def close(self) -> None:
        self._file = None


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


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `__metadata__` of a safetensors file (empty for pickles)."""
    with open_state_dict(path) as sd:
        return dict(sd.metadata)


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
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
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


def write_safetensors_atomic(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata=None) -> None:
    """Write to `<path>.tmp-<pid>` and rename, so a crash never leaves a partial `path`."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())  # the temporary file is private; the result follows the umask
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def metadata_json(metadata: dict) -> dict[str, str]:
    """safetensors metadata must be str → str."""
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
