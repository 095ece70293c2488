"""The CLIP BPE tokenizer, built offline from the vocabulary file shipped inside the open_clip_torch wheel.

open_clip is never imported (it imports torchvision); we only locate its package folder. The vocabulary is the
OpenAI CLIP one: 256 byte symbols, the same with an end-of-word mark, one symbol per merge, then the two
special tokens — 49408 entries in all.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import tempfile
from pathlib import Path

from ..errors import UserError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
N_MERGES = VOCAB_SIZE - 256 - 256 - 2  # 48894
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77


def bpe_vocabulary_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "open_clip_torch is not installed; install it with `pip install --no-deps open_clip_torch` "
            "(it is needed only for its CLIP vocabulary file)"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / BPE_FILE
        if candidate.is_file():
            return candidate
    raise UserError(f"open_clip_torch is installed but has no {BPE_FILE}; reinstall it")


def byte_symbols() -> list[str]:
    """GPT-2/CLIP byte → printable-unicode table, in byte order 0..255."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    table = {}
    extra = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    # CLIP orders the vocabulary by the printable bytes first, then the remapped ones.
    order = printable + [b for b in range(256) if b not in printable]
    return [table[b] for b in order]


def vocabulary_and_merges(bpe_path: Path) -> tuple[dict[str, int], list[str]]:
    lines = gzip.open(bpe_path, "rt", encoding="utf-8").read().split("\n")
    merges = lines[1 : N_MERGES + 1]
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}, merges


@functools.lru_cache(maxsize=1)
def tokenizer_files() -> tuple[str, str]:
    """vocab.json and merges.txt written once per process into a private temporary folder."""
    vocab, merges = vocabulary_and_merges(bpe_vocabulary_path())
    folder = Path(tempfile.mkdtemp(prefix="traintrain-clip-bpe-"))
    vocab_file = folder / "vocab.json"
    merges_file = folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return str(vocab_file), str(merges_file)


@functools.lru_cache(maxsize=4)
def clip_tokenizer(pad_token: str = EOS, max_length: int = MAX_LENGTH):
    """A transformers CLIPTokenizer; SD1 pads with <|endoftext|>, OpenCLIP towers (SD2, SDXL's second) with "!".
    One per (pad, length) and process: building one costs megabytes of vocabulary, and encoding does not change it."""
    from transformers import CLIPTokenizer

    vocab_file, merges_file = tokenizer_files()
    tok = CLIPTokenizer(vocab_file, merges_file, pad_token=pad_token)  # positional: 4.30 and 5.x name them differently
    tok.model_max_length = max_length
    return tok
