"""The random state a resumed cell needs beyond its data order.

A resumed cell replays its data order (:meth:`bench.cell.batches.DeviceBatches.skip_epoch`, then
the current epoch's batches drawn and dropped), and with it the per-image policy's draws, which
happen in the loader. The training step draws too: random erasing from its generator,
mixup/cutmix from NumPy's, drop-path from torch's global one. :func:`capture` saves those in a
checkpoint and :func:`restore` puts them back, so a killed cell, single or packed, resumes to the
result it would have had.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.cell.augment import BatchMix


def capture(mix: BatchMix | None, device: torch.device) -> dict:
    """Every random state of a training step that the data order's replay does not restore."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
        "erase": _gen_state(mix),
        "mix": _np_encode(mix.np_state) if mix is not None else None,
    }


def restore(rng: dict, mix: BatchMix | None, device: torch.device) -> None:
    """Put back what :func:`capture` saved; ``device`` is a tensor's (cuda:0, not cuda), as a
    generator compares its own with."""
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state_all(rng["cuda"])
    _set_gen(mix, rng["erase"], device)
    if mix is not None and rng["mix"] is not None:
        mix.np_state = _np_decode(rng["mix"])


def _np_encode(state: tuple) -> dict:
    """NumPy's generator state as tensors and numbers: what ``torch.load(weights_only=True)``,
    Lightning's way of reading a checkpoint, accepts."""
    name, keys, pos, has_gauss, gauss = state
    assert name == "MT19937"
    keys = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    return {"keys": keys, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _np_decode(state: dict | tuple) -> tuple:
    if isinstance(state, tuple):  # a pack checkpoint written before states were encoded
        return state
    keys = state["keys"].numpy().astype(np.uint32)
    return ("MT19937", keys, state["pos"], state["has_gauss"], state["gauss"])


def _gen_state(holder) -> torch.Tensor | None:
    """The state of ``holder.g``, a generator made at its first draw (None before it)."""
    g = getattr(holder, "g", None)
    return g.get_state() if g is not None else None


def _set_gen(holder, state, device) -> None:
    if holder is None:
        return
    holder.g = None  # never drawn from when saved: made afresh from its seed at the first draw
    if state is not None:
        holder.g = torch.Generator(device=device)
        holder.g.set_state(state)
