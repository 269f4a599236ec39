"""Packed cells: k cells of one architecture and recipe trained as one batched model.

The seeds and training-set sizes of one rung share every kernel launch (:mod:`bench.cell.stacked`),
and each member is still its own cell: its own subset, data order and augmentation (its own
:class:`DeviceBatches`, seeded by its seed), its own normalisation statistics, gradient clipping
on its own gradient norm, its own validation passes, best checkpoint, record and W&B run.
AdamW is elementwise, so one optimizer over the stacked parameters is k separate ones. The loop
follows :class:`bench.cell.module.CellModule` step for step (train-loss windows, divergence
checks, validation every ``steps // evals`` steps, the strictly best validation error picks the
test checkpoint), so a packed cell's record matches the one it would have had alone.

A killed pack resumes. At validations (``checkpoint_every_s`` apart) and at the end of training
every member's own resumable state goes to its own checkpoint folder, a single cell's of its
run_id::

    ckpt_dir/pack-last.ckpt   the member at the pack's latest such write
    ckpt_dir/pack-prev.ckpt   the one before it: the fallback when pack-last.ckpt is damaged

each written beside its name and renamed (:func:`bench.cell.resume.write_atomic`). It holds the
member's slice of the stacked parameters and buffers (``state_dict``, with the ``model.`` prefix
of a Lightning checkpoint, so :mod:`bench.cell.checkpoints` loads it), its slice of the optimizer
state and the scheduler's, ``global_step``, its loss window, and under ``bench_pack`` its
per-step losses, W&B history, status, best validation error and best weights, and the random
state that the data order cannot replay (batch mixing's generators, torch's global one for
drop-path: :mod:`bench.cell.rng_state`). The data order, and with it the per-image policy's draws,
is replayed as a resumed single cell's is: :meth:`DeviceBatches.skip_epoch` per finished epoch,
then the current epoch's batches drawn and dropped. A member's file is not a Lightning checkpoint
(Lightning resumes from its own loop state, which the pack has not got), and the names differ
from ``last.ckpt`` so that Lightning never tries. A single-cell run of a killed member (``bench run``, a worker's cell trained alone)
resumes it instead as a pack of one (:func:`resume_lone_member`) when its pack checkpoints are
later than its ``last.ckpt``; at the same step ``last.ckpt`` wins, and ``force`` starts afresh.

Members of one stack share one step, so a pack resumes from the latest step at which every
member has a readable checkpoint of its own (from pack-last or pack-prev); when there is none
(a member without one, or steps that do not meet) the whole pack starts from step 0, never a mix.
A worker therefore packs killed members by the step they resume from (:func:`resume_step`), so
the members of two killed packs that stopped at different steps each resume with their own.
Each member's ``attempts.json`` counts the pack's attempts and the step each resumed from.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.cell import tracking
from bench.cell.batches import channel_stats
from bench.cell.checkpoints import MODEL_PREFIX
from bench.cell.module import make_optimizer, warmup_cosine
from bench.cell.phases import Stopwatch
from bench.cell.resume import (
    LAST,
    PACK_LAST,
    PACK_PREV,
    PREV,
    Attempts,
    drop_resume_files,
    readable_step,
    write_atomic,
)
from bench.cell.rng_state import capture, restore
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


def _from_step(batches, skip: int):
    """Endless batches from position ``skip``: what a run that had trained ``skip`` steps would
    draw next. Finished epochs are skipped without making them (``skip_epoch``) and the current
    one's first batches made and dropped, at once, so the generators restored after this call
    are not drawn from again by the replay."""
    epochs, pos = divmod(skip, len(batches))
    for _ in range(epochs):
        batches.skip_epoch()
    it = iter(batches)
    for _ in range(pos):
        next(it)
    return itertools.chain(it, _cycle(batches))


def pick_pack_resume(members: list[Member], ckpt_dirs, total: int) -> tuple[int, list] | None:
    """(step, each member's checkpoint) at the latest step every member has one of its own
    for, else None: the pack then starts from step 0 (members of a stack share one step)."""
    if ckpt_dirs is None:
        return None
    found = [
        _readable(m.setup.cell.run_id, d, total) for m, d in zip(members, ckpt_dirs, strict=True)
    ]
    common = set.intersection(*(set(f) for f in found))
    if not common:
        if any(found):
            print("pack: its members' checkpoints share no step; starting from 0", file=sys.stderr)
        return None
    step = max(common)
    return step, [f[step] for f in found]


def _readable(run_id: str, ckpt_dir: Path, total: int) -> dict[int, dict]:
    """{step: checkpoint} of this member's pack checkpoints that load and are its own."""
    out = {}
    for name in (PACK_PREV, PACK_LAST):
        path = ckpt_dir / name
        if not path.exists():
            continue
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            ok = ckpt["bench"]["run_id"] == run_id and ckpt["bench_pack"]["total_steps"] == total
        except Exception:  # a torn or foreign file costs its step, never the pack
            ckpt, ok = None, False
        if ok:
            out[int(ckpt["global_step"])] = ckpt
        else:
            print(f"warning: {run_id}: {path} is damaged or not its own; not used", file=sys.stderr)
    return out


def resume_step(setup: CellSetup, ckpt_dir: Path) -> int | None:
    """The latest step a member's own readable pack checkpoints hold, else None."""
    found = _readable(setup.cell.run_id, Path(ckpt_dir), setup.total_steps)
    return max(found) if found else None


def lone_member_step(setup: CellSetup, ckpt_dir: Path) -> int | None:
    """The step a killed pack member run on its own resumes from as a pack of one, or None:
    it trains as a single cell. Its pack checkpoints are used only when they are later than the
    single cell's own (last.ckpt, else prev.ckpt); at the same step the single cell's win, as the
    path every single cell takes. ``force`` retrains from step 0; fine-tune cells are never packed.
    """
    cell = setup.cell
    if cell.force or cell.finetune_img_size:
        return None
    step = resume_step(setup, ckpt_dir)
    if step is None or step <= _single_step(Path(ckpt_dir)):
        return None
    return step


def _single_step(ckpt_dir: Path) -> int:
    """The step a single-cell run resumes from (:func:`bench.cell.resume.pick_resume`), -1: none."""
    for name in (LAST, PREV):
        step = readable_step(ckpt_dir / name) if (ckpt_dir / name).exists() else None
        if step is not None:
            return step
    return -1


def resume_lone_member(setup: CellSetup, ckpt_dir: Path, execution: dict) -> dict | None:
    """A killed pack member trained on as a pack of one, and its record (``execution`` added to
    it); None when :func:`lone_member_step` says it trains as a single cell."""
    step = lone_member_step(setup, ckpt_dir)
    if step is None:
        return None
    print(
        f"{setup.cell.run_id}: resuming a killed pack member at step {step} (a pack of one)",
        file=sys.stderr,
        flush=True,
    )
    return train_packed([setup], [Path(ckpt_dir)], execution)[0]


def _prefixed(state: dict) -> dict:
    return {MODEL_PREFIX + k: v.cpu() for k, v in state.items()}


def _to(state: dict | None, device) -> dict | None:
    return {k: v.to(device) for k, v in state.items()} if state is not None else None


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
    """Train, validate and test k compatible cells together (see the module docstring).

    ``ckpt_dirs``: the members' checkpoint folders, written at each validation and resumed from
    (None: no checkpoints); ``attempts``: their ``attempts.json``, told the step resumed from."""

    def __init__(self, setups: list[CellSetup], ckpt_dirs=None, attempts=None):
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
        self.watch = Stopwatch()  # the whole pack's phases, in every member's record
        self.ckpt_dirs = [Path(d) for d in ckpt_dirs] if ckpt_dirs is not None else None
        self.attempts = attempts
        self.start = 0  # the step this attempt resumed from
        self.window, self.count = None, 0  # the train-loss window: per member sums, its length
        self.step_losses: list[torch.Tensor] = []  # this attempt's per-step losses [k]

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # ------------------------------------------------------------------ training
    def fit(self) -> None:
        with self.watch.time("fit_s"):
            self._fit()

    def _fit(self) -> None:
        cell, total = self.cell, self.total
        r = cell.resolved_recipe
        opt = make_optimizer(
            self.stacked.param_groups(r["weight_decay"]), r["optimizer"], r["lr"], self.device
        )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, warmup_cosine(total, int(cell.warmup * total))
        )
        iters = self._resume(opt, sched)
        log_every = max(1, min(50, total // 20))
        interval = max(1, total // cell.evals) if self.members[0].val is not None else None
        saved = self.start
        self.stacked.train(True)
        t0 = saved_t = time.perf_counter()
        done = all(m.status != "completed" for m in self.members)  # all diverged before a kill
        for step in range(self.start + 1, self.start if done else total + 1):
            self._step([next(it) for it in iters], opt, sched)
            if step % log_every == 0 or step == total:
                self._flush(step, self.window / self.count, opt.param_groups[0]["lr"], t0)
                self.window, self.count = None, 0
                if all(m.status != "completed" for m in self.members):
                    break
            if interval and step % interval == 0:
                t_val = time.perf_counter()
                with self.watch.time("validation_s"):
                    self._validate(step)
                if time.perf_counter() - saved_t >= cell.checkpoint_every_s:
                    with self.watch.time("checkpoint_s"):
                        saved = self._save(step, opt, sched)
                    saved_t = time.perf_counter()
                t0 += time.perf_counter() - t_val  # validation time is not training time
        _sync(self.device)
        self.train_s = time.perf_counter() - t0
        self._finish(opt, sched, saved)

    def _step(self, pairs: list, opt, sched) -> None:
        x, y = self._batch(pairs)
        with self.autocast():
            logits = self.stacked(x)
        losses = self._losses(logits, y)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        if self.cell.grad_clip:
            self.stacked.clip_grad_norms_(self.cell.grad_clip)
        opt.step()
        sched.step()
        detached = losses.detach().float()
        self.step_losses.append(detached)
        self.window = detached if self.window is None else self.window + detached
        self.count += 1

    def _finish(self, opt, sched, saved: int) -> None:
        """Each member's losses and final weights; its last checkpoint when training ended
        after the last validation (a kill while testing then resumes with nothing to train)."""
        self.trained = len(self.step_losses)  # by this attempt: its throughput's steps
        self.steps = self.start + self.trained
        if self.steps > saved:
            with self.watch.time("checkpoint_s"):
                self._save(self.steps, opt, sched)
        new = torch.stack(self.step_losses).T.tolist() if self.step_losses else [[]] * self.k
        for m in self.members:
            m.losses = m.losses + new[m.index]
            m.final_state = self.stacked.member_state(m.index)

    # ------------------------------------------------------------------ resumable checkpoints
    def _save(self, step: int, opt, sched) -> int:
        """Every member's own state at ``step``, into its own folder (see the module docstring)."""
        if self.ckpt_dirs is None:
            return step
        window = self.window.tolist() if self.window is not None else [None] * self.k
        losses = torch.stack(self.step_losses).T.tolist() if self.step_losses else [[]] * self.k
        for m, d in zip(self.members, self.ckpt_dirs, strict=True):
            ckpt = self._member_ckpt(m, step, opt, sched, window[m.index], losses[m.index])
            write_atomic(d / PACK_LAST, lambda tmp, c=ckpt: torch.save(c, tmp), d / PACK_PREV)
        if self.attempts is not None:
            for a in self.attempts:
                a.tick()
        return step

    def _member_ckpt(self, m: Member, step: int, opt, sched, window, losses) -> dict:
        s = m.setup
        best = {k: v.cpu() for k, v in m.best_state.items()} if m.best_state is not None else None
        return {
            "global_step": step,
            "state_dict": _prefixed(self.stacked.member_state(m.index)),
            "optimizer_states": [self.stacked.member_optimizer(opt, m.index)],
            "lr_schedulers": [sched.state_dict()],
            "bench": {
                "cell": s.cell.to_dict(),
                "arch": dict(vars(s.arch)),
                "run_id": s.cell.run_id,
            },
            "bench_window": {
                "loss_sum": window,
                "loss_count": self.count,
                "last_train_loss": m.last_loss,
            },
            "bench_pack": {
                "total_steps": self.total,
                "losses": m.losses + losses,
                "history": m.history,
                "status": m.status,
                "error": m.error,
                "best_val": m.best_val,
                "best_state": best,
                "rng": self._rng(m),
            },
        }

    def _rng(self, m: Member) -> dict:
        """The random state the data order's replay does not restore."""
        return capture(self.mixes[m.index], self.device)

    def _resume(self, opt, sched) -> list:
        """The members' training batches, from the step their checkpoints agree on (0 without)."""
        found = pick_pack_resume(self.members, self.ckpt_dirs, self.total)
        if found is not None:
            self.start, ckpts = found
            self._load(ckpts, opt, sched)
            names = ", ".join(m.setup.cell.run_id for m in self.members)
            print(f"pack of {names}: resuming from step {self.start}", file=sys.stderr)
        if self.attempts is not None:
            for a in self.attempts:
                a.current["resumed_from_step"] = self.start if found is not None else None
                a.tick()
        iters = [_from_step(m.train, self.start) for m in self.members]
        if found is not None:  # the step's random state, once the data order is replayed
            for m, c in zip(self.members, ckpts, strict=True):
                self._load_rng(m, c["bench_pack"]["rng"])
        return iters

    def _load(self, ckpts: list[dict], opt, sched) -> None:
        n = len(MODEL_PREFIX)
        for m, c in zip(self.members, ckpts, strict=True):
            self.stacked.load_member(m.index, {k[n:]: v for k, v in c["state_dict"].items()})
            p, w = c["bench_pack"], c["bench_window"]
            m.losses, m.history = list(p["losses"]), list(p["history"])
            m.status, m.error, m.best_val = p["status"], p["error"], p["best_val"]
            m.best_state = _to(p["best_state"], self.device)
            m.last_loss = w["last_train_loss"]
        self.stacked.load_optimizer(opt, [c["optimizer_states"][0] for c in ckpts])
        sched.load_state_dict(ckpts[0]["lr_schedulers"][0])
        w = [c["bench_window"] for c in ckpts]
        self.count = w[0]["loss_count"]
        if self.count:
            self.window = torch.tensor([x["loss_sum"] for x in w], device=self.device)

    def _load_rng(self, m: Member, rng: dict) -> None:
        # torch's global state is one, the same in every member's file
        restore(rng, self.mixes[m.index], self.scale.device)

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
        with self.watch.time("test_s"):
            for m in self.members:
                if m.best_state is not None:
                    self.stacked.load_member(m.index, m.best_state)
            results = self.evaluate("test")
        for m, (err, loss) in zip(self.members, results, strict=True):
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
            "train_images_per_s": self.trained * self.batch / self.train_s
            if self.train_s
            else None,
            "checkpoint": path,
            "phases": self.watch.to_dict(),
        }


def save_checkpoint(m: Member, ckpt_dir: Path) -> str:
    """best.ckpt in the layout :mod:`bench.cell.checkpoints` reads (no optimizer: not resumable)."""
    state = m.best_state if m.best_state is not None else m.final_state
    s = m.setup
    ckpt = {
        "state_dict": _prefixed(state),
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
    pack = Pack(setups, ckpt_dirs)
    pack.attempts = [Attempts(d) for d in ckpt_dirs]  # once the pack is built: see run_packed
    pack.fit()
    pack.test()
    execution = {"mode": "packed", "pack": pack.k, **(execution or {})}
    execution["pack_images_per_s"] = round(
        pack.k * pack.trained * pack.batch / max(pack.train_s, 1e-9), 1
    )
    out = []
    members = zip(pack.members, ckpt_dirs, pack.attempts, strict=True)
    for m, ckpt_dir, attempts in members:
        out.append(_record_member(pack, m, ckpt_dir, attempts, created, execution))
    return out


def _record_member(pack: Pack, m: Member, ckpt_dir, attempts, created, execution) -> dict:
    setup = m.setup
    logger = tracking.make_logger(setup.cell, setup.params)
    if logger is not None:
        for step, metrics in m.history:
            logger.log_metrics(metrics, step=step)
    outcome = pack.outcome(m, ckpt_dir)
    attempts.tick()  # this attempt's wall time: its building, training, test and records
    record = build_record(setup, m.status, m.error, outcome, attempts, created, logger)
    record["execution"] = dict(execution)
    records.write_record(record, setup.cell.folder.records_dir)
    tracking.log_record(logger, record)
    tracking.finish(logger, exit_code=0 if m.status == "completed" else 1)
    if m.status == "completed":
        drop_resume_files(ckpt_dir)
    return record


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
