"""The one atomic-write helper (`trainer/fileio.py`) and the writers that go through it: LoRA / checkpoint files,
JSON (presets, settings, the job queue), augmented PNGs.

The contract: the final file appears whole or not at all, with mode 0o666 & ~umask; no temporary file survives a
success or a failure; `overwrite=False` creates the name exclusively (a file that appears between any check and the
rename is never replaced); and nothing ever changes the process umask, not even for an instant — other threads
(Gradio, the job worker) create files at the same time.
"""

from __future__ import annotations

import errno
import os
import random
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from trainer import fileio, presets
from trainer.errors import UserError
from trainer.fileio import UMASK, atomic_path, write_bytes_atomic, write_json_atomic, write_text_atomic
from trainer.imagetools.augment import AugmentOptions, augment_file
from trainer.models.checkpoint import open_state_dict, write_safetensors_atomic
from trainer.networks.io import save_network

REPO = Path(__file__).resolve().parents[1]
OTHER = b"another writer's file"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def process_umask() -> int:
    mask = os.umask(0o022)  # the test itself may flip it: no other thread of ours writes files here
    os.umask(mask)
    return mask


# -- no writer touches the umask (defect 7) ----------------------------------------------------------------------
@pytest.fixture
def umask_calls(monkeypatch):
    calls = []
    real = os.umask

    def spy(mask):
        calls.append(mask)
        return real(mask)

    monkeypatch.setattr(os, "umask", spy)
    return calls


def test_writing_a_safetensors_file_never_calls_umask(umask_calls, tmp_path):
    write_safetensors_atomic({"a": torch.ones(3)}, tmp_path / "x.safetensors")
    write_safetensors_atomic({"a": torch.zeros(3)}, tmp_path / "x.safetensors")
    assert umask_calls == []


def test_writing_json_and_text_never_calls_umask(umask_calls, tmp_path):
    write_json_atomic(tmp_path / "a.json", {"k": "v"})
    write_text_atomic(tmp_path / "b.txt", "text", overwrite=False)
    presets.save_preset("p", {"k": 1}, overwrite=False, presets_dir=tmp_path / "presets")
    assert umask_calls == []


def test_writing_an_augmented_png_never_calls_umask(umask_calls, tmp_path):
    augment_file(Image.new("RGB", (16, 12), (200, 0, 0)), "red", tmp_path, AugmentOptions(count=2),
                 random.Random(0))
    assert umask_calls == []


# -- permissions follow the umask -------------------------------------------------------------------------------
def test_umask_is_the_process_umask_and_files_follow_it(tmp_path):
    assert UMASK == process_umask()
    for path in (write_bytes_atomic(tmp_path / "b.bin", b"x"), write_json_atomic(tmp_path / "j.json", [1])):
        assert mode_of(path) == 0o666 & ~UMASK


_CHILD = """
import os, random, stat, sys
from pathlib import Path
import torch
from PIL import Image
from trainer.fileio import UMASK, write_json_atomic
from trainer.imagetools.augment import AugmentOptions, augment_file
from trainer.models.checkpoint import write_safetensors_atomic
out = Path(sys.argv[1])
write_json_atomic(out / "a.json", {})
write_safetensors_atomic({"a": torch.ones(1)}, out / "a.safetensors")
augment_file(Image.new("RGB", (8, 8)), "img", out, AugmentOptions(count=1), random.Random(0))
print(oct(UMASK), *sorted(f"{p.name}={oct(stat.S_IMODE(p.stat().st_mode))}" for p in out.iterdir()))
"""


@pytest.mark.parametrize("umask", [0o027, 0o002])
def test_final_mode_is_0o666_under_a_known_umask(umask, tmp_path):
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path)], cwd=REPO, umask=umask,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    mode = oct(0o666 & ~umask)
    assert proc.stdout.split() == [oct(umask), f"a.json={mode}", f"a.safetensors={mode}", f"img_id_0.png={mode}"]


# -- no temporary file survives ---------------------------------------------------------------------------------
def test_no_temporary_file_after_success(tmp_path):
    with atomic_path(tmp_path / "a.bin") as tmp:
        assert tmp.parent == tmp_path and tmp.name != "a.bin"
        tmp.write_bytes(b"data")
    write_safetensors_atomic({"a": torch.ones(2)}, tmp_path / "b.safetensors")
    write_json_atomic(tmp_path / "c.json", {}, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.safetensors", "c.json"]
    assert (tmp_path / "a.bin").read_bytes() == b"data"


def test_no_temporary_file_and_target_untouched_after_an_error_in_the_block(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    for overwrite in (True, False):
        with pytest.raises(RuntimeError, match="half way"):
            with atomic_path(target, overwrite=overwrite) as tmp:
                tmp.write_bytes(b"half")
                raise RuntimeError("half way")
        with pytest.raises(RuntimeError, match="half way"):
            with atomic_path(tmp_path / "new.bin", overwrite=overwrite) as tmp:
                raise RuntimeError("half way")
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
    assert target.read_bytes() == b"old"


def test_a_failed_safetensors_write_leaves_nothing(tmp_path):
    target = tmp_path / "a.safetensors"
    write_safetensors_atomic({"a": torch.ones(2)}, target)
    before = target.read_bytes()
    with pytest.raises(Exception):
        write_safetensors_atomic({"a": torch.zeros(2), "b": "not a tensor"}, target)
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]
    assert target.read_bytes() == before


# -- exclusive create ---------------------------------------------------------------------------------------------
def test_overwrite_false_refuses_an_existing_name_and_keeps_its_bytes(tmp_path):
    target = tmp_path / "a.json"
    target.write_bytes(OTHER)
    with pytest.raises(FileExistsError):
        write_json_atomic(target, {"new": True}, overwrite=False)
    with pytest.raises(FileExistsError):
        write_safetensors_atomic({"a": torch.ones(1)}, target, overwrite=False)
    assert target.read_bytes() == OTHER
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    write_json_atomic(target, {"new": True})  # the default replaces
    assert target.read_bytes() != OTHER


def test_two_threads_same_name_exactly_one_wins(tmp_path):
    for round_ in range(10):
        target = tmp_path / f"race{round_}.bin"
        barrier = threading.Barrier(2)
        outcome = {}

        def write(who):
            try:
                with atomic_path(target, overwrite=False) as tmp:
                    tmp.write_bytes(who.encode())
                    barrier.wait(timeout=10)  # both are past any existence check before either renames
                outcome[who] = "won"
            except FileExistsError:
                outcome[who] = "lost"

        threads = [threading.Thread(target=write, args=(who,)) for who in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(outcome.values()) == ["lost", "won"], outcome
        winner = next(who for who, result in outcome.items() if result == "won")
        assert target.read_bytes() == winner.encode()
    assert len(list(tmp_path.iterdir())) == 10  # no temporary file left by the loser


@pytest.fixture
def appears_at_rename(monkeypatch):
    """`appears_at_rename(path)`: another writer creates `path` just before our final rename (or link) of it —
    after every existence check a writer could make."""
    targets = set()
    real_replace, real_link = os.replace, os.link

    def arrive(dst):
        dst = Path(dst)
        if dst in targets and not dst.exists():
            dst.write_bytes(OTHER)

    def replace(src, dst, *args, **kwargs):
        arrive(dst)
        return real_replace(src, dst, *args, **kwargs)

    def link(src, dst, *args, **kwargs):
        arrive(dst)
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "link", link)
    return lambda path: targets.add(Path(path))


def test_augment_never_replaces_a_file_that_appears_while_it_writes(appears_at_rename, tmp_path):
    appears_at_rename(tmp_path / "cat_id_0.png")
    written = augment_file(Image.new("RGB", (16, 12)), "cat", tmp_path, AugmentOptions(count=2), random.Random(0))
    assert [p.name for p in written] == ["cat_id_1.png", "cat_id_2.png"]  # numbering goes on past the taken name
    assert (tmp_path / "cat_id_0.png").read_bytes() == OTHER
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat_id_0.png", "cat_id_1.png", "cat_id_2.png"]


def test_save_preset_never_replaces_a_preset_that_appears_while_it_writes(appears_at_rename, tmp_path):
    appears_at_rename(tmp_path / "mine.json")
    with pytest.raises(UserError, match="already exists"):
        presets.save_preset("mine", {"k": 1}, overwrite=False, presets_dir=tmp_path)
    assert (tmp_path / "mine.json").read_bytes() == OTHER
    assert [p.name for p in tmp_path.iterdir()] == ["mine.json"]
    presets.save_preset("mine", {"k": 1}, overwrite=True, presets_dir=tmp_path)
    assert presets.load_preset("mine", presets_dir=tmp_path) == {"k": 1}


class StubNetwork:
    def save_tensors(self, strength=1.0):
        return {"lora_unet_x.lora_down.weight": torch.ones(2, 3), "lora_unet_x.lora_up.weight": torch.ones(3, 2),
                "lora_unet_x.alpha": torch.tensor(2.0)}


def test_save_network_never_replaces_a_lora_that_appears_while_it_writes(appears_at_rename, tmp_path):
    path = tmp_path / "net.safetensors"
    appears_at_rename(path)
    with pytest.raises(UserError, match="already exists; tick save_overwrite"):
        save_network(StubNetwork(), path, metadata={}, save_precision="fp32")
    assert path.read_bytes() == OTHER
    assert [p.name for p in tmp_path.iterdir()] == ["net.safetensors"]
    save_network(StubNetwork(), path, metadata={}, save_precision="fp32", overwrite=True)
    with open_state_dict(path) as sd:
        assert torch.equal(sd["lora_unet_x.lora_down.weight"], torch.ones(2, 3))


# -- where hard links or long names are a problem ----------------------------------------------------------------
def test_exclusive_create_without_hard_links(monkeypatch, tmp_path):
    """FAT / exFAT and some network shares have no hard links (EPERM): the name is reserved with O_EXCL instead."""

    def no_links(src, dst, *args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(dst))

    monkeypatch.setattr(os, "link", no_links)
    target = write_bytes_atomic(tmp_path / "a.bin", b"first", overwrite=False)
    assert target.read_bytes() == b"first" and mode_of(target) == 0o666 & ~UMASK
    with pytest.raises(FileExistsError):
        write_bytes_atomic(target, b"second", overwrite=False)
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_a_name_near_the_length_limit_is_writable(tmp_path):
    """The temporary name is derived from the target's, but must not be longer than the longest allowed name."""
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    for stem in ("x" * (name_max - len(".json")), "猫" * ((name_max - len(".json")) // 3)):
        path = write_json_atomic(tmp_path / f"{stem}.json", {"ok": True}, overwrite=False)
        assert path.read_text(encoding="utf-8").strip().endswith("}")
    assert len(list(tmp_path.iterdir())) == 2


def test_the_temporary_file_is_flushed_to_disk_before_the_rename(monkeypatch, tmp_path):
    """A crash after the rename must not leave an empty file (delayed allocation): fsync before it."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda *a, **k: (events.append("replace"), real_replace(*a, **k))[1])
    write_bytes_atomic(tmp_path / "a.bin", b"data")
    assert events[:2] == ["fsync", "replace"]


def test_fileio_keeps_its_api():
    assert callable(fileio.atomic_path) and isinstance(fileio.UMASK, int)
    for name in ("write_bytes_atomic", "write_text_atomic", "write_json_atomic"):
        assert callable(getattr(fileio, name))


# -- folders (training states) -------------------------------------------------------------------------------------
def test_a_folder_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "s-state"
    with pytest.raises(RuntimeError):
        with fileio.atomic_folder(target) as tmp:
            (tmp / "a.bin").write_bytes(b"half")
            raise RuntimeError("killed while writing")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary one
    with fileio.atomic_folder(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".s-state.")
        (tmp / "a.bin").write_bytes(b"first")
    assert [p.name for p in tmp_path.iterdir()] == ["s-state"] and mode_of(target) == 0o777 & ~UMASK
    with pytest.raises(FileExistsError):
        with fileio.atomic_folder(target, overwrite=False) as tmp:
            (tmp / "b.bin").write_bytes(b"second")
    assert [p.name for p in target.iterdir()] == ["a.bin"]
    with fileio.atomic_folder(target) as tmp:  # overwrite: the old folder is replaced, nothing else is left
        (tmp / "b.bin").write_bytes(b"second")
    assert [p.name for p in tmp_path.iterdir()] == ["s-state"] and [p.name for p in target.iterdir()] == ["b.bin"]


def test_a_killed_writers_temporary_folder_is_removed_by_the_next_run(tmp_path):
    dead = tmp_path / ".s-state.999999999-abcd1234.tmp"  # no such pid
    dead.mkdir()
    (dead / "network.safetensors").write_bytes(b"half")
    old = os.path.getmtime(dead) - fileio.STALE_TEMP_AGE_S - 60
    os.utime(dead, (old, old))
    assert fileio.remove_stale_temps(tmp_path) == [dead] and list(tmp_path.iterdir()) == []
