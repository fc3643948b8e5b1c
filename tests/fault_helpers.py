"""Code run in the subprocesses that tests/test_faults.py kills (importable by spawned workers).

Each ``python -m fault_helpers <case> ...`` entry point does real work of the library until
the test kills it with SIGKILL, so the fault is the real one: no cleanup code of the
killed process runs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def sleeping_jobs(config: dict, jobs, emit) -> None:
    """A ``run_jobs`` for :func:`run_parallel`: record this worker's pid, then stay busy."""
    folder = Path(config["folder"])
    for _job in jobs:
        (folder / f"worker-{os.getpid()}").write_text("busy")
        time.sleep(config["seconds"])
        emit({"pid": os.getpid()})


def _parallel_parent(folder: str) -> None:
    """A parent running two simulator-style workers that each sit in a long job."""
    from rocket_vla.envs.parallel import run_parallel

    run_parallel(sleeping_jobs, {"folder": folder, "seconds": 120}, [0, 1], 2, lambda rec: None)


def _slow_fill(cache_dir: str, frames: int) -> None:
    """A real teacher-cache fill (random tiny VGGT), slow enough to be killed mid-episode."""
    import torch

    from rocket_vla.teachers import TeacherInput, VGGTConfig, VGGTTeacher
    from rocket_vla.teachers.fill import cache_episodes

    torch.set_num_threads(1)
    teacher = VGGTTeacher(VGGTConfig.tiny(), TeacherInput(size=(28, 28)), seed=0)
    gen = torch.Generator().manual_seed(0)
    frames_by_cam = {c: torch.randint(0, 256, (frames, 28, 28, 3), dtype=torch.uint8, generator=gen)
                     for c in ("agentview_rgb", "eye_in_hand_rgb")}
    items = [(str(e), frames_by_cam, list(range(frames))) for e in range(4)]
    cache_episodes(teacher, items, cache_dir, layers=[1, 2], cameras=("agentview_rgb", "eye_in_hand_rgb"),
                   dataset_fingerprint="slow", frame_size=(28, 28), batch_size=1, progress=False)


def _torn_writer(path: str) -> None:
    """Append one whole record and half of the next, then wait to be killed mid-write."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"suite": "libero_spatial", "task_id": 0, "trial": 0, "success": true}\n')
        fh.write('{"suite": "libero_spatial", "task_id": 0, "tri')
        fh.flush()
        os.fsync(fh.fileno())
        print("torn", flush=True)
        time.sleep(120)


def _hold_eval_folder(folder: str) -> None:
    """Take the run-folder lock the way `rocket eval` does, then keep running."""
    from rocket_vla.records import FolderLock

    with FolderLock(folder, "rocket eval"):
        print("locked", flush=True)
        time.sleep(120)


def _hold_train_folder(folder: str) -> None:
    """A real trainer built on ``folder`` (it locks the folder from construction), then kept
    from training: the run holding the folder that a second `rocket train` must be refused."""
    import torch
    from minivla_fixtures import make_episodes, tiny_config

    from rocket_vla.train import Trainer

    torch.set_num_threads(1)
    cfg = tiny_config(Path(folder).parent, out_dir=folder, variant="baseline", steps=1)
    trainer = Trainer(cfg, episodes=make_episodes(n=2, length=6))
    print("locked", flush=True)
    time.sleep(120)
    trainer.fit()


@contextlib.contextmanager
def small_disk(folder: Path, size_kib: int) -> Iterator[Path]:
    """A real tmpfs of ``size_kib`` KiB mounted at ``folder``: writes past it fail with ENOSPC.

    The full-disk faults are real ones; mounting needs root (CAP_SYS_ADMIN), so elsewhere the
    test is skipped with the reason. Unmounted (lazily if busy) when the block ends."""
    import pytest

    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root): {done.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


if __name__ == "__main__":
    case, *args = sys.argv[1:]
    {"parallel": lambda: _parallel_parent(args[0]),
     "fill": lambda: _slow_fill(args[0], int(args[1])),
     "torn": lambda: _torn_writer(args[0]),
     "lock": lambda: _hold_eval_folder(args[0]),
     "train_lock": lambda: _hold_train_folder(args[0])}[case]()
