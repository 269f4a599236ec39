"""Checkpoints that survive a kill at any moment, and a resume equal to an uninterrupted run.

    ckpt_dir/last.ckpt      saved at a validation when ``checkpoint_every_s`` seconds have passed
                            since the last one, and at the end of training
    ckpt_dir/prev.ckpt      the one before it: the fallback when last.ckpt is damaged
    ckpt_dir/best.ckpt      the weights of the best validation error, at the end (then tested)
    ckpt_dir/attempts.json  one entry per attempt: when it started, the step it resumed from,
                            its wall time (up to its last checkpoint when it was killed)

last.ckpt and prev.ckpt (a pack's pack-last.ckpt and pack-prev.ckpt too) only serve a resume: once
a cell's record says it completed they are removed (:func:`drop_resume_files`), and best.ckpt and
attempts.json stay.

Every file is written beside its final name, fsynced and renamed, so on any filesystem that
renames atomically (local disks, NFS, Lustre) a reader sees the old file or the new one, never
half of one. A resumed cell continues exactly where the saved one was: the module's loss window
is in the checkpoint and the training batches fast-forward to the saved step, drawing the same
random numbers (order and augmentation) the uninterrupted run drew.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch

from bench.cell.batches import DeviceBatches
from bench.cell.phases import Stopwatch
from bench.cell.rng_state import capture, restore
from bench.clock import utc_now
from bench.errors import StorageError, is_storage
from bench.results.records import atomic_write_text

LAST, PREV, BEST, ATTEMPTS = "last.ckpt", "prev.ckpt", "best.ckpt", "attempts.json"
PACK_LAST, PACK_PREV = "pack-last.ckpt", "pack-prev.ckpt"  # a packed member's (bench.cell.packed)
RESUME_FILES = (LAST, PREV, PACK_LAST, PACK_PREV)


def save_atomic(
    trainer: pl.Trainer, path: Path, keep_previous: Path | None = None, weights_only: bool = False
) -> None:
    """``trainer``'s checkpoint at ``path``: temp file beside it, fsync, rename. With
    ``keep_previous`` the file it replaces is kept there."""
    write_atomic(
        path, lambda tmp: trainer.save_checkpoint(tmp, weights_only=weights_only), keep_previous
    )


def write_atomic(
    path: Path, write: Callable[[Path], None], keep_previous: Path | None = None
) -> None:
    """``write(tmp)`` beside ``path``, fsynced and renamed onto it (see :func:`save_atomic`)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        _fsync(tmp)
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = e if is_storage(e) else getattr(e, "__cause__", None) or e.__context__
        if is_storage(e) or is_storage(cause):  # Lightning may wrap the OSError
            raise StorageError(path, cause) from None
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_resume_files(ckpt_dir: Path) -> None:
    """A completed cell's resume-only checkpoints removed: with the optimizer state in them they
    are twice or three times the tested weights (134 MB each for an 11M-parameter model), for
    every cell of a study."""
    for name in RESUME_FILES:  # the cell's own and its fine-tuning phase's (finetune/)
        for path in Path(ckpt_dir).rglob(name):
            path.unlink(missing_ok=True)


def readable_step(path: Path) -> int | None:
    """The global step of a checkpoint that loads, else None."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        return int(ckpt["global_step"])
    except Exception:
        return None


def pick_resume(ckpt_dir: Path, run_id: str) -> tuple[Path | None, int]:
    """The checkpoint to resume from and its step: last.ckpt, else prev.ckpt (one warning line
    for each damaged one, moved aside to ``<name>.damaged``), else none (restart the cell)."""
    for name in (LAST, PREV):
        path = ckpt_dir / name
        if not path.exists():
            continue
        step = readable_step(path)
        if step is not None:
            return path, step
        damaged = path.with_name(path.name + ".damaged")
        os.replace(path, damaged)
        then = "trying prev.ckpt" if name == LAST else "restarting the cell"
        print(
            f"warning: {run_id}: checkpoint {path} is damaged (moved to {damaged.name}); {then}",
            file=sys.stderr,
            flush=True,
        )
    return None, 0


class Attempts:
    """``attempts.json``: every attempt at a cell, so its record says how it got there."""

    def __init__(self, ckpt_dir: Path):
        self.path = Path(ckpt_dir) / ATTEMPTS
        self.history: list[dict] = []
        if self.path.exists():
            try:
                self.history = list(json.loads(self.path.read_text()))
            except (OSError, ValueError, TypeError):
                self.history = []  # a damaged history costs the count, never the cell
        self.t0 = time.perf_counter()
        self.history.append({"started_at": utc_now(), "resumed_from_step": None, "wall_s": 0.0})
        self.tick()  # on disk at once: an attempt killed before its first checkpoint counts too

    @property
    def current(self) -> dict:
        return self.history[-1]

    def tick(self) -> None:
        """The current attempt's wall time so far, on disk."""
        self.current["wall_s"] = round(time.perf_counter() - self.t0, 3)
        atomic_write_text(self.path, json.dumps(self.history, indent=1) + "\n")

    @property
    def wall_s(self) -> float:
        return round(sum(a.get("wall_s") or 0.0 for a in self.history), 3)


class ResumableBatches:
    """The training batches, fast-forwarded by ``skip`` batches on their next pass."""

    def __init__(self, batches: DeviceBatches):
        self.batches, self.skip = batches, 0

    def __len__(self) -> int:
        return len(self.batches)

    # Lightning asks a loader for this interface before it calls a mid-epoch resume reliable.
    # The position is not kept here but in the checkpoint's global_step (on_load_checkpoint
    # below): a prefetching loop has drawn one batch more than it trained on when it saves.
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def __iter__(self):
        skip, self.skip = self.skip, 0
        epochs, pos = divmod(skip, len(self.batches))
        for _ in range(epochs):
            self.batches.skip_epoch()
        it = iter(self.batches)
        for _ in range(pos):  # at most one epoch made and dropped: its draws happen as they did
            next(it)
        yield from it


class ResumeCheckpoints(pl.Callback):
    """last.ckpt at a validation once ``every_s`` seconds have passed since the last write, and at
    the end; best.ckpt, the best validation's weights, at the end.

    A checkpoint with its optimizer state is two to three times the weights (134 MB for an
    11M-parameter model), and written at each of a cell's validations it can cost more than a
    short cell's training. So the best validation's weights wait in memory (on the device) and
    travel inside last.ckpt, which a resume reads them back from; at the end best.ckpt is written
    before last.ckpt, so a kill between the two resumes from the earlier last.ckpt and writes
    both again. A kill loses at most ``every_s`` seconds of training and the validation interval.
    """

    def __init__(
        self,
        ckpt_dir: Path,
        train: ResumableBatches,
        has_val: bool,
        attempts=None,
        watch=None,
        every_s: float = 0.0,
    ):
        self.dir, self.train, self.has_val = Path(ckpt_dir), train, has_val
        self.attempts = attempts
        self.watch = watch or Stopwatch()  # the time spent writing checkpoints
        self.every_s, self.written = every_s, time.perf_counter()
        self.best: float | None = None
        self.best_state: dict | None = None  # the weights of ``best``, on the device

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = state.get("best")

    # the loss window of CellModule: a resumed cell reports the same train_loss; the random state
    # of the training step (erasing, mixup/cutmix, drop-path), which the replay of the data order
    # does not restore (the per-image policy runs in the loader, one batch ahead of the step when
    # Lightning saves, so the replay restores it instead: ImagePolicy.skip); the best weights.
    def on_save_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        checkpoint["bench_window"] = {
            "loss_sum": module._loss_sum,
            "loss_count": module._loss_count,
            "last_train_loss": module.last_train_loss,
        }
        checkpoint["bench_rng"] = capture(module.batch_augment, module.device)
        if self.best_state is not None:
            checkpoint["bench_best"] = {k: v.cpu() for k, v in self.best_state.items()}

    def on_load_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        window = checkpoint.get("bench_window") or {}
        module._loss_sum = window.get("loss_sum")
        module._loss_count = window.get("loss_count", 0)
        module.last_train_loss = window.get("last_train_loss", float("nan"))
        if "bench_rng" in checkpoint:  # absent from checkpoints written before it was kept
            restore(checkpoint["bench_rng"], module.batch_augment, module.device)
        if "bench_best" in checkpoint:  # absent before it was kept: best.ckpt was written then
            self.best_state = {k: v.to(module.device) for k, v in checkpoint["bench_best"].items()}
        self.train.skip = int(checkpoint["global_step"])  # one batch per optimizer step

    def on_validation_end(self, trainer, module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        err = trainer.callback_metrics.get("val/error")
        with self.watch.time("checkpoint_s"):
            if err is not None and (self.best is None or float(err) < self.best):
                self.best = float(err)
                self.best_state = _weights(module)
            if time.perf_counter() - self.written >= self.every_s:
                self._save_last(trainer)

    def on_train_end(self, trainer, module) -> None:
        with self.watch.time("checkpoint_s"):
            if not self.has_val:  # without validation the final weights are tested
                save_atomic(trainer, self.dir / BEST, weights_only=True)
            elif self.best_state is not None:
                self._save_best(trainer, module)
            self._save_last(trainer)

    def _save_best(self, trainer, module) -> None:
        """best.ckpt from the weights in memory, without optimizer state: it is tested, never
        resumed from. The module holds the final weights again afterwards."""
        final = _weights(module)
        module.load_state_dict(self.best_state)
        try:
            save_atomic(trainer, self.dir / BEST, weights_only=True)
        finally:
            module.load_state_dict(final)

    def _save_last(self, trainer) -> None:
        save_atomic(trainer, self.dir / LAST, keep_previous=self.dir / PREV)
        self.written = time.perf_counter()
        if self.attempts is not None:
            self.attempts.tick()


def _weights(module) -> dict:
    """A copy of ``module``'s state on its device: weights that later steps do not change."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
