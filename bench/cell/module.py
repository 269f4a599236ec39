"""The LightningModule: loss, optimizer, schedule, metrics. One instance trains one cell.

Train metrics are written straight to the logger every ``log_every`` steps instead of through
``self.log`` on every step: per-step logging and host syncs cost more than a small model's step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def warmup_cosine(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices and kernels only: not on norms, biases, tokens or embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "reg_token"))
        (no_decay if skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class CellModule(pl.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float,
        weight_decay: float,
        total_steps: int,
        warmup: float,
        label_smoothing: float,
        mean: torch.Tensor,
        std: torch.Tensor,
        batch_size: int,
        log_every: int = 50,
        channels_last: bool = False,
        meta: dict | None = None,
        grad_clip: float = 0.0,
        optimizer: str = "adamw",
        batch_augment: Callable | None = None,
    ):
        super().__init__()
        self.optimizer_name = optimizer  # adamw | sgd (Nesterov, momentum 0.9)
        # (x, y) -> (x, y or soft targets) on the normalised training batch (bench.cell.augment)
        self.batch_augment = batch_augment
        self.meta = meta or {}  # the cell and architecture, saved in every checkpoint
        self.grad_clip = grad_clip
        self._clipped: list[torch.Tensor] | None = None  # the parameters clipping reads
        # NHWC weights as well as NHWC inputs: with only one of them cuDNN converts every conv
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.lr, self.weight_decay = lr, weight_decay
        self.total_steps, self.warmup_steps = total_steps, int(warmup * total_steps)
        self.label_smoothing = label_smoothing
        # at least ~20 loss checks per run, so a divergence stops a short run early too
        self.batch_size, self.log_every = batch_size, max(1, min(log_every, total_steps // 20))
        self.channels_last = channels_last
        # uint8 -> normalised float happens here, on the device, fused with the forward pass
        self.register_buffer("scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (mean / std).view(1, 3, 1, 1), persistent=False)
        self._loss_sum = None
        self._loss_count = 0
        self._window_start = None
        self.train_images_per_s = float("nan")
        self.last_train_loss = float("nan")

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        x = x_uint8.float() * self.scale - self.shift
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x_uint8))

    # ------------------------------------------------------------------ training
    def training_step(self, batch, batch_idx):
        x, y = batch
        x = self.normalize(x)
        if self.batch_augment is not None:
            x, y = self.batch_augment(x, y)
        logits = self.model(x)
        if y.ndim == 2:  # soft targets from mixup/cutmix, label smoothing already in them
            loss = torch.sum(-y * F.log_softmax(logits, dim=-1), dim=-1).mean()
        else:
            loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        detached = loss.detach()
        self._loss_sum = detached if self._loss_sum is None else self._loss_sum + detached
        self._loss_count += 1
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        step = self.global_step
        if step % self.log_every and step < self.total_steps:
            return
        self.flush_train_metrics(step)

    def flush_train_metrics(self, step: int) -> None:
        if self._loss_sum is None:
            return
        n = self._loss_count
        mean_loss = (self._loss_sum / n).item()  # the only host sync of the window
        now = time.perf_counter()
        self._loss_sum, self._loss_count = None, 0
        if not math.isfinite(mean_loss):
            raise Diverged(f"training loss is {mean_loss} at step {step}")
        self.last_train_loss = mean_loss
        metrics = {"train/loss": mean_loss, "lr": self.optimizers().param_groups[0]["lr"]}
        if self._window_start is not None and now > self._window_start:
            self.train_images_per_s = n * self.batch_size / (now - self._window_start)
            metrics["train/images_per_s"] = self.train_images_per_s
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=step)
        self._window_start = time.perf_counter()

    def on_validation_start(self):
        self._window_start = None  # time spent validating is not training throughput

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, reduction="sum")
        wrong = (logits.argmax(dim=1) != y).sum()
        self._eval_sums += torch.stack(
            [
                loss.float(),
                wrong.float(),
                torch.tensor(len(y), device=y.device, dtype=torch.float32),
            ]
        )

    def on_validation_epoch_start(self):
        self._eval_sums = torch.zeros(3, device=self.device)

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def _eval_metrics(self, prefix: str) -> None:
        loss_sum, wrong, n = self._eval_sums.tolist()
        self.log(f"{prefix}/error", wrong / max(n, 1), prog_bar=False)
        self.log(f"{prefix}/loss", loss_sum / max(n, 1), prog_bar=False)

    def on_validation_epoch_end(self):
        self._eval_metrics("val")

    def on_test_epoch_end(self):
        self._eval_metrics("test")

    def on_before_optimizer_step(self, optimizer) -> None:
        # Clipped here rather than by the Trainer: Lightning refuses its own clipping with a
        # fused optimizer under bf16-mixed, and fused AdamW is what makes small GPU steps fast.
        # The parameter list is made once: walking the module tree at every step is host time
        # that a small model's GPU step, already host-bound, pays in full.
        if self.grad_clip:
            if self._clipped is None:
                self._clipped = [p for p in self.parameters() if p.requires_grad]
            torch.nn.utils.clip_grad_norm_(self._clipped, self.grad_clip, foreach=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["bench"] = self.meta

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        groups = param_groups(self.model, self.weight_decay)
        opt = make_optimizer(groups, self.optimizer_name, self.lr, self.device)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, warmup_cosine(self.total_steps, self.warmup_steps)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def make_optimizer(groups: list[dict], name: str, lr: float, device: torch.device):
    """The recipe's optimizer; fused kernels on the GPU. Both are elementwise, so one optimizer
    over stacked parameters (packed cells) equals one per cell."""
    fused = device.type == "cuda"
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, fused=fused)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), fused=fused)
