"""Issue 15 acceptance, with real processes: SIGKILL during a save leaves no partial final file (and the next run
removes the dead run's temp file); two concurrent CLI runs of one save_lora_name: exactly one succeeds.

Each test runs `python -m trainer train` in a child process. A `sitecustomize.py` shim (on the child's PYTHONPATH)
injects the fault, selected by environment variables, without touching the trainer's code:

* FAULT_HANG=1: `safetensors.torch.save_file` into the output folder writes the file, truncates it to half (a write
  cut short), signals `saving` in the sync folder and sleeps — the test then SIGKILLs the child mid-save. A writer
  that does not use save_file is stopped the same way just before a file is renamed or linked onto the final name.
* FAULT_LINK_BARRIER=NAME: `os.link` onto NAME in the output folder (the exclusive create of the lock, or of the
  final file) waits until both children reach it, so the two runs race at exactly that point.
* FAULT_NO_RESERVATION=1: the runner's reservation is a no-op, so the exclusive create at save time is what stops
  the second run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from trainer import fileio

ROOT = Path(__file__).resolve().parent.parent
NAME = "t"
FINAL = f"{NAME}.safetensors"
LOCK = f".{FINAL}{fileio.LOCK_SUFFIX}"

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL, pids in temp names and hard links as on Linux"),
    pytest.mark.filterwarnings("ignore"),
]

SHIM = textwrap.dedent('''
    import os

    if os.environ.get("FAULT_OUT"):
        import time
        from pathlib import Path

        _out = Path(os.environ["FAULT_OUT"]).resolve()
        _sync = Path(os.environ["FAULT_SYNC"])

        def _barrier(tag, parties=2, timeout=60):
            (_sync / f"{tag}.{os.getpid()}").touch()
            deadline = time.monotonic() + timeout
            while len(list(_sync.glob(f"{tag}.*"))) < parties and time.monotonic() < deadline:
                time.sleep(0.01)

        def _hang(path):
            (_sync / "saving.part").write_text(str(path))
            os.replace(_sync / "saving.part", _sync / "saving")
            time.sleep(600)

        if os.environ.get("FAULT_HANG"):
            import safetensors.torch as _st

            _real_save = _st.save_file

            def save_file(tensors, filename, metadata=None):
                _real_save(tensors, filename, metadata)
                path = Path(filename).resolve()
                if path.parent == _out:  # the LoRA (through its temp file, or directly if not atomic)
                    with open(path, "r+b") as f:
                        f.truncate(path.stat().st_size // 2)  # cut short, as a kill mid-write leaves it
                    _hang(path)

            _st.save_file = save_file

            # a writer that does not go through save_file: stopped just before its file takes the final name
            def _before_commit(real):
                def commit(src, dst, *args, **kwargs):
                    if Path(dst).name == os.environ["FAULT_FINAL"] and Path(dst).parent.resolve() == _out:
                        _hang(Path(src).resolve())
                    return real(src, dst, *args, **kwargs)
                return commit

            os.replace, os.rename, os.link = (_before_commit(f) for f in (os.replace, os.rename, os.link))

        if os.environ.get("FAULT_LINK_BARRIER"):
            _target = os.environ["FAULT_LINK_BARRIER"]
            _real_link = os.link

            def link(src, dst, *args, **kwargs):
                dst_path = Path(dst)
                if dst_path.name == _target and dst_path.parent.resolve() == _out:
                    _barrier("link")
                return _real_link(src, dst, *args, **kwargs)

            os.link = link

        if os.environ.get("FAULT_NO_RESERVATION"):
            import contextlib

            import trainer.runner

            trainer.runner.reserve_name = lambda path: contextlib.nullcontext()
''')


@pytest.fixture
def cli(demo_models, sample_images, tmp_path):
    """start(**fault_env) → Popen of `python -m trainer train job.json` writing into tmp_path/out (1 step, 64 px,
    rank 4, on the SD1 demo model), stdout and stderr to files; out, sync folder and shim under tmp_path."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM, encoding="utf-8")
    sync = tmp_path / "sync"
    sync.mkdir()
    out = tmp_path / "out"
    started = []

    def job(**settings) -> Path:
        data = json.loads((ROOT / "presets" / "LoRA.json").read_text(encoding="utf-8"))
        data.update({"lora_data_directory": str(sample_images), "image_size(height, width)": "64",
                     "image_min_length": "64", "image_buckets_step": 64, "train_iterations": "1",
                     "train_batch_size": "1", "network_rank": "4", "network_alpha": "2", "train_seed": "0",
                     "train_learning_rate": "1e-3", "save_lora_name": NAME, **settings})
        path = tmp_path / f"job-{len(started)}.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        return path

    def start(settings=None, **fault_env) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAULT_")}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=os.pathsep.join([str(shim), str(ROOT)]),
                   # one thread each: two runs share two cores (and a loaded CI machine) without oversubscribing
                   OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", FAULT_OUT=str(out), FAULT_SYNC=str(sync), FAULT_FINAL=FINAL,
                   **{k: str(v) for k, v in fault_env.items()})
        n = len(started)
        cmd = [sys.executable, "-m", "trainer", "train", str(job(**(settings or {}))),
               "--model", str(demo_models["sd1"]), "--output-dir", str(out)]
        with open(tmp_path / f"run-{n}.out", "wb") as log_out, open(tmp_path / f"run-{n}.err", "wb") as log_err:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_out, stderr=log_err)
        proc.logs = (tmp_path / f"run-{n}.out", tmp_path / f"run-{n}.err")
        started.append(proc)
        return proc

    start.out, start.sync = out, sync
    yield start
    for proc in started:  # a failed assertion must not leave a sleeping child behind
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def output(proc) -> tuple[str, str]:
    return tuple(p.read_text(encoding="utf-8", errors="replace") for p in proc.logs)


def finish(proc, timeout=120) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the run did not end in {timeout} s:\n{output(proc)[1][-3000:]}")


def wait_for(path: Path, proc, timeout=120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = output(proc)
            pytest.fail(f"the run ended (exit {proc.returncode}) before its save was interrupted:\n"
                        f"{out[-2000:]}\n{err[-3000:]}")
        assert time.monotonic() < deadline, f"the run did not reach its save in {timeout} s"
        time.sleep(0.05)


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def temps_of(folder: Path, pid: int | None = None) -> list[str]:
    return [n for n in listing(folder) if n.startswith(f".{FINAL}.") and n.endswith(fileio.TEMP_SUFFIX)
            and (pid is None or f".{pid}-" in n)]


def assert_complete_lora(path: Path) -> None:
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        assert len(keys) > 100, keys  # the SD1 demo network: hundreds of tensors
        for k in keys:
            assert torch.isfinite(f.get_tensor(k)).all(), k
        assert (f.metadata() or {}).get("ss_output_name") == NAME, f.metadata()


def sigkill_mid_save(cli, settings=None) -> tuple[subprocess.Popen, str]:
    proc = cli(settings, FAULT_HANG=1)
    wait_for(cli.sync / "saving", proc)
    written = Path((cli.sync / "saving").read_text(encoding="utf-8")).name
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    return proc, written


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and stderr.rstrip().splitlines()[-1] == errors[0], stderr[-3000:]
    return errors[0]


# -- SIGKILL during a save -------------------------------------------------------------------------------------
def test_sigkill_during_the_save_leaves_no_final_file_and_the_next_run_cleans_up(cli):
    out = cli.out
    proc, written = sigkill_mid_save(cli)
    assert written != FINAL, "the LoRA was written under its final name, not through a temp file"
    assert FINAL not in listing(out), listing(out)  # no partial final file
    dead_temps = temps_of(out, proc.pid)
    assert dead_temps == [written], listing(out)  # the cut-short temp file, named with the dead writer's pid
    assert LOCK in listing(out)  # the dead run still names the output

    # a later run: the temp files of a dead writer go once they have been untouched for STALE_TEMP_AGE_S
    # (a writer on another machine sharing the folder keeps its file); age it instead of waiting a minute
    old = time.time() - fileio.STALE_TEMP_AGE_S - 60
    os.utime(out / written, (old, old))
    again = cli()
    assert finish(again) == 0, output(again)
    assert "Successfully created" in output(again)[0]
    assert listing(out) == [FINAL], listing(out)  # temp removed, stale lock taken over and released
    assert_complete_lora(out / FINAL)


def test_sigkill_during_an_overwriting_save_keeps_the_old_file(cli):
    out = cli.out
    out.mkdir()
    save_file({"lora_unet_x.lora_down.weight": torch.ones(4, 8), "lora_unet_x.lora_up.weight": torch.ones(8, 4)},
              str(out / FINAL), metadata={"ss_output_name": NAME})
    before = (out / FINAL).read_bytes()
    proc, written = sigkill_mid_save(cli, {"save_overwrite": True})
    assert written != FINAL, "the LoRA was written over the old file, not through a temp file"
    assert (out / FINAL).read_bytes() == before  # the old file, byte for byte
    assert temps_of(out) == temps_of(out, proc.pid) == [written], listing(out)


# -- two concurrent runs of one name -------------------------------------------------------------------------------
def race(cli, **fault_env) -> tuple[subprocess.Popen, subprocess.Popen]:
    """Two runs started at once; returns (the one that exited 0, the other), each checked for its exit code."""
    a, b = cli(**fault_env), cli(**fault_env)
    codes = sorted([finish(a), finish(b)])
    assert codes == [0, 2], (codes, output(a)[1][-2000:], output(b)[1][-2000:])
    return (a, b) if a.returncode == 0 else (b, a)


def check_race_outcome(cli, winner, loser) -> str:
    assert "Successfully created" in output(winner)[0], output(winner)
    assert str(cli.out / FINAL) in output(winner)[0]
    assert "Successfully" not in output(loser)[0], output(loser)
    assert listing(cli.out) == [FINAL], listing(cli.out)  # no temp files, no lock left behind
    assert_complete_lora(cli.out / FINAL)
    return one_error_line(output(loser)[1])


def test_two_concurrent_runs_of_one_name_the_second_is_refused_at_the_start(cli):
    """Both pass the early checks (no file yet) and meet at the exclusive create of the lock: one holds the name for
    its whole run, the other stops before loading, with one line."""
    winner, loser = race(cli, FAULT_LINK_BARRIER=LOCK)
    message = check_race_outcome(cli, winner, loser)
    assert "another job is writing" in message and str(cli.out / FINAL) in message, message
    assert f"process {winner.pid}" in message, message
    assert len(list(cli.sync.glob("link.*"))) == 2  # both really met at the lock


def test_two_concurrent_saves_of_one_name_never_replace_each_other(cli):
    """Without the reservation (as if both had got past it), both train and meet at the exclusive create of the
    final file, each with a complete temp file: exactly one links it, the other is refused and removes its temp."""
    winner, loser = race(cli, FAULT_LINK_BARRIER=FINAL, FAULT_NO_RESERVATION=1)
    message = check_race_outcome(cli, winner, loser)
    assert "already exists" in message and str(cli.out / FINAL) in message, message
    assert len(list(cli.sync.glob("link.*"))) == 2  # both really met at the final name


# -- SIGKILL while the data is being written ----------------------------------------------------------------------
WRITER = """
import sys
import torch
from trainer.models.checkpoint import write_safetensors_atomic
write_safetensors_atomic({"w": torch.zeros(32 * 1024 * 1024)}, sys.argv[1], overwrite=False)  # 128 MiB
"""


def test_sigkill_while_the_data_is_written_leaves_nothing_the_next_run_keeps(tmp_path):
    """The trainer's write step in a child, stopped (SIGSTOP, so the state is certain) as soon as some file in the
    folder holds data but the final name does not exist yet, then SIGKILLed: after the dead writer's files have aged,
    remove_stale_temps must leave the folder empty."""
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out / FINAL)], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                entries = list(os.scandir(out))
                if all(e.name != FINAL for e in entries) and any(e.stat().st_size > 0 for e in entries):
                    break
            except FileNotFoundError:  # renamed between the listing and the stat
                pass
            time.sleep(0.0005)
        os.kill(proc.pid, signal.SIGSTOP)
        if FINAL in listing(out) or not any((out / n).stat().st_size > 0 for n in listing(out)):
            pytest.skip(f"the write ended before the child was stopped: {listing(out)}")
        during = listing(out)
    finally:
        proc.kill()
        proc.wait()
    old = time.time() - fileio.STALE_TEMP_AGE_S - 60
    for name in listing(out):
        os.utime(out / name, (old, old))
    fileio.remove_stale_temps(out)
    assert listing(out) == [], f"while writing: {during}; left after the next run's clean-up: {listing(out)}"
