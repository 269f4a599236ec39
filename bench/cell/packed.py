"""Packed cells: k cells of one architecture and recipe trained as one batched model.

The seeds and training-set sizes of one rung share every kernel launch (:mod:`bench.cell.stacked`),
and each member is still its own cell: its own subset, data order and augmentation (its own
:class:`DeviceBatches`, seeded by its seed), its own normalisation statistics, gradient clipping
on its own gradient norm, its own validation passes, best checkpoint, record and W&B run.
AdamW is elementwise, so one optimizer over the stacked parameters is k separate ones. The loop
follows :class:`bench.cell.module.CellModule` step for step (train-loss windows, divergence
checks, validation every ``steps // evals`` steps, the strictly best validation error picks the
test checkpoint), so a packed cell's record matches the one it would have had alone.

A packed group keeps no resumable checkpoint: a group that is killed trains again from the start.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.cell import tracking
from bench.cell.batches import channel_stats
from bench.cell.checkpoints import MODEL_PREFIX
from bench.cell.module import make_optimizer, warmup_cosine
from bench.cell.resume import Attempts
from bench.cell.stacked import StackedModels
from bench.cell.train import CellSetup, batch_augment, build_loaders, build_record
from bench.clock import utc_now
from bench.results import records


def pack_key(setup: CellSetup) -> tuple:
    """Cells with the same key can train as one stack: same shape, recipe, steps and batch."""
    c = setup.cell
    resolved = tuple(sorted(c.resolved_recipe.items()))  # optimizer, lr, wd, augmentation, mixing
    recipe = (resolved, c.warmup, c.label_smoothing, c.grad_clip, c.evals, c.precision)
    has_val = len(setup.subsets.val_idx) > 0
    extra = (c.augment, c.permute_patches, c.permute_pixels, c.finetune_img_size, c.device)
    return (setup.arch, setup.total_steps, setup.batch_size, has_val, recipe, extra)


@dataclass
class Member:
    """One cell of the pack: its batches, its statistics and what it has done so far."""

    setup: CellSetup
    index: int
    train: object
    val: object
    test: object
    history: list = field(default_factory=list)  # (step, metrics) for its W&B run
    losses: list = field(default_factory=list)  # every step's training loss
    status: str = "completed"
    error: str | None = None
    last_loss: float = float("nan")
    best_val: float | None = None
    best_state: dict | None = None
    test_error: float | None = None
    test_loss: float | None = None
    final_state: dict | None = None


def _cycle(batches):
    while True:
        yield from batches


def _norm(members: list[Member], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member (scale, shift) [k, 1, 3, 1, 1]: uint8 -> normalised float, as CellModule does."""
    scales, shifts = [], []
    for m in members:
        s = m.setup
        mean, std = channel_stats(s.splits.train_x, s.subsets.train_idx, release=s.splits.release)
        scales.append((1.0 / (255.0 * std)).view(1, 3, 1, 1))
        shifts.append((mean / std).view(1, 3, 1, 1))
    return torch.stack(scales).to(device), torch.stack(shifts).to(device)


class Pack:
    """Train, validate and test k compatible cells together (see the module docstring)."""

    def __init__(self, setups: list[CellSetup]):
        keys = {pack_key(s) for s in setups}
        if len(keys) != 1:
            raise ValueError("cells of a pack must share architecture, recipe, steps and batch")
        first = setups[0]
        self.cell, self.device = first.cell, first.device
        self.total, self.batch = first.total_steps, first.batch_size
        self.members = [Member(s, i, *build_loaders(s)) for i, s in enumerate(setups)]
        self.k = len(setups)
        self.stacked = StackedModels([s.model for s in setups], self.device)
        self.mixes = [batch_augment(s.cell, s.splits.num_classes) for s in setups]
        self.scale, self.shift = _norm(self.members, self.device)
        gpu = self.device.type == "cuda"
        precision = (
            self.cell.precision if self.cell.precision != "auto" else ("bf16" if gpu else "fp32")
        )
        self.bf16 = precision == "bf16"
        self.train_s = 0.0

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # ------------------------------------------------------------------ training
    def fit(self) -> None:
        cell, total = self.cell, self.total
        r = cell.resolved_recipe
        opt = make_optimizer(
            self.stacked.param_groups(r["weight_decay"]), r["optimizer"], r["lr"], self.device
        )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, warmup_cosine(total, int(cell.warmup * total))
        )
        log_every = max(1, min(50, total // 20))
        interval = max(1, total // cell.evals) if self.members[0].val is not None else None
        iters = [_cycle(m.train) for m in self.members]
        window, count, step_losses = None, 0, []
        self.stacked.train(True)
        t0 = time.perf_counter()
        for step in range(1, total + 1):
            x, y = self._batch([next(it) for it in iters])
            with self.autocast():
                logits = self.stacked(x)
            losses = self._losses(logits, y)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            if cell.grad_clip:
                self.stacked.clip_grad_norms_(cell.grad_clip)
            opt.step()
            sched.step()
            detached = losses.detach().float()
            step_losses.append(detached)
            window = detached if window is None else window + detached
            count += 1
            if step % log_every == 0 or step == total:
                self._flush(step, window / count, opt.param_groups[0]["lr"], t0)
                window, count = None, 0
                if all(m.status != "completed" for m in self.members):
                    break
            if interval and step % interval == 0:
                t_val = time.perf_counter()
                self._validate(step)
                t0 += time.perf_counter() - t_val  # validation time is not training time
        _sync(self.device)
        self.train_s = time.perf_counter() - t0
        per_step = torch.stack(step_losses).T.tolist() if step_losses else [[]] * self.k
        for m in self.members:
            m.losses = per_step[m.index]
            m.final_state = self.stacked.member_state(m.index)
        self.steps = len(step_losses)

    def _batch(self, pairs: list) -> tuple[torch.Tensor, torch.Tensor]:
        """The k members' batches, normalised, each through its own erasing and mixup/cutmix."""
        x = torch.stack([p[0] for p in pairs]).float() * self.scale - self.shift
        y = torch.stack([p[1] for p in pairs])
        if self.mixes[0] is None:
            return x, y
        mixed = [mix(x[i], y[i]) for i, mix in enumerate(self.mixes)]
        return torch.stack([m[0] for m in mixed]), torch.stack([m[1] for m in mixed])

    def _losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each member's mean loss [k]: soft-target cross-entropy for mixed targets (label
        smoothing already in them), else cross-entropy with label smoothing, as CellModule."""
        if y.ndim == 3:
            return torch.sum(-y * F.log_softmax(logits.float(), dim=-1), dim=-1).mean(1)
        return (
            F.cross_entropy(
                logits.flatten(0, 1),
                y.flatten(),
                label_smoothing=self.cell.label_smoothing,
                reduction="none",
            )
            .view(self.k, -1)
            .mean(1)
        )

    def _flush(self, step: int, means: torch.Tensor, lr: float, t0: float) -> None:
        for m, loss in zip(self.members, means.tolist(), strict=True):
            if m.status != "completed":
                continue
            if not math.isfinite(loss):
                m.status, m.error = "diverged", f"Diverged: training loss is {loss} at step {step}"
                continue
            m.last_loss = loss
            m.history.append((step, {"train/loss": loss, "lr": lr}))

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, which: str) -> list[tuple[float, float]]:
        """(error, mean loss) per member on its validation or test batches (the same images)."""
        self.stacked.train(False)
        sums = torch.zeros(self.k, 3, device=self.device)
        batches = getattr(self.members[0], which)
        for xb, yb in batches:
            x = xb.float()[None] * self.scale - self.shift
            with self.autocast():
                logits = self.stacked(x)
            loss = F.cross_entropy(
                logits.flatten(0, 1).float(), yb.repeat(self.k), reduction="none"
            ).view(self.k, -1)
            wrong = (logits.argmax(-1) != yb).sum(1)
            sums[:, 0] += loss.sum(1)
            sums[:, 1] += wrong.float()
            sums[:, 2] += len(yb)
        self.stacked.train(True)
        return [(w / max(n, 1), s / max(n, 1)) for s, w, n in sums.tolist()]

    def _validate(self, step: int) -> None:
        for m, (err, loss) in zip(self.members, self.evaluate("val"), strict=True):
            if m.status != "completed":
                continue
            m.history.append((step, {"val/error": err, "val/loss": loss}))
            if m.best_val is None or err < m.best_val:  # strictly better, as ModelCheckpoint
                m.best_val, m.best_state = err, self.stacked.member_state(m.index)

    def test(self) -> None:
        """Each member's best validation checkpoint (its last weights without one) on the test set."""
        for m in self.members:
            if m.best_state is not None:
                self.stacked.load_member(m.index, m.best_state)
        for m, (err, loss) in zip(self.members, self.evaluate("test"), strict=True):
            m.test_error, m.test_loss = err, loss

    # ------------------------------------------------------------------ results
    def outcome(self, m: Member, ckpt_dir: Path | None) -> dict:
        if m.status != "completed":
            return {}
        path = None
        if ckpt_dir is not None:
            path = save_checkpoint(m, ckpt_dir)
        return {
            "test_error": m.test_error,
            "test_loss": m.test_loss,
            "val_error": m.best_val,
            "train_loss": m.last_loss,
            "epochs": self.steps / max(1, len(m.train)),
            "steps": self.steps,
            "train_images_per_s": self.steps * self.batch / self.train_s if self.train_s else None,
            "checkpoint": path,
        }


def save_checkpoint(m: Member, ckpt_dir: Path) -> str:
    """best.ckpt in the layout :mod:`bench.cell.checkpoints` reads (no optimizer: not resumable)."""
    state = m.best_state if m.best_state is not None else m.final_state
    s = m.setup
    ckpt = {
        "state_dict": {MODEL_PREFIX + k: v.cpu() for k, v in state.items()},
        "bench": {"cell": s.cell.to_dict(), "arch": dict(vars(s.arch)), "run_id": s.cell.run_id},
    }
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / "best.ckpt"
    tmp = path.with_name(".best.ckpt.tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)
    return str(path)


def train_packed(
    setups: list[CellSetup], ckpt_dirs: list[Path], execution: dict | None = None
) -> list[dict]:
    """Train the pack, then write each member's record and W&B run (its history replayed)."""
    created = utc_now()
    t0 = time.perf_counter()
    pack = Pack(setups)
    pack.fit()
    pack.test()
    wall = time.perf_counter() - t0
    execution = {"mode": "packed", "pack": pack.k, **(execution or {})}
    execution["pack_images_per_s"] = round(
        pack.k * pack.steps * pack.batch / max(pack.train_s, 1e-9), 1
    )
    out = []
    for m, ckpt_dir in zip(pack.members, ckpt_dirs, strict=True):
        out.append(_record_member(pack, m, ckpt_dir, wall, created, execution))
    return out


def _record_member(pack: Pack, m: Member, ckpt_dir, wall, created, execution) -> dict:
    setup = m.setup
    logger = tracking.make_logger(setup.cell, setup.params)
    if logger is not None:
        for step, metrics in m.history:
            logger.log_metrics(metrics, step=step)
    outcome = pack.outcome(m, ckpt_dir)
    attempts = Attempts(ckpt_dir)  # one attempt, the pack's: a killed pack trains from the start
    attempts.current["wall_s"] = round(wall, 3)
    record = build_record(setup, m.status, m.error, outcome, attempts, created, logger)
    record["execution"] = dict(execution)
    records.write_record(record, setup.cell.folder.records_dir)
    tracking.log_record(logger, record)
    tracking.finish(logger, exit_code=0 if m.status == "completed" else 1)
    return record


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
