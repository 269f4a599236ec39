"""Packed cells: k cells trained as one vmapped model equal the k cells trained one by one."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from bench.cell.checkpoints import load_run
from bench.cell.config import Cell
from bench.cell.packed import Pack, pack_key
from bench.cell.run import run_cell
from bench.cell.stacked import StackedModels
from bench.cell.train import build_loaders, build_module, build_trainer, prepare
from tests.conftest import bench
from tests.test_worker import write_sweep


def tiny(family: str, n: int, seed: int, **kw) -> Cell:
    values = dict(
        dataset="synthetic",
        family=family,
        size="xxs",
        img_size=16,
        n_train=n,
        seed=seed,
        batch_size=16,
        steps=6,
        wandb="disabled",
        progress=False,
        device="cpu",
        checkpoint_every_s=0,  # at every validation: the resume tests stop packs between them
    )
    return Cell(**{**values, **kw})


class StepLosses(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


def alone(cell: Cell) -> tuple[list[float], dict]:
    """The cell through the project's Lightning path: its per-step losses and final weights."""
    setup = prepare(cell)
    module = build_module(setup)
    train, _, _ = build_loaders(setup)
    rec = StepLosses()
    build_trainer(setup, None, None, has_val=False, extra_callbacks=[rec]).fit(module, train)
    return rec.losses, {k: v.detach().clone() for k, v in setup.model.state_dict().items()}


@pytest.mark.parametrize(
    "family, recipe",
    [
        ("resnet", "basic"),
        # SGD with Nesterov, TrivialAugment, erasing, mixup/cutmix with soft targets
        ("resnet", "strong"),
        pytest.param("vit", "basic", marks=pytest.mark.slow),
    ],
)
def test_packed_group_equals_cells_trained_one_by_one(family, recipe):
    # different seeds and n: own init, subset, data order, normalisation; no validation, so
    # the final weights are the ones compared; grad_clip low so per-member clipping acts
    cells = [
        tiny(family, 96, 0, val_size=0, grad_clip=0.5, recipe=recipe),
        tiny(family, 160, 1, val_size=0, grad_clip=0.5, recipe=recipe),
    ]
    pack = Pack([prepare(c) for c in cells])
    pack.fit()
    for member, cell in zip(pack.members, cells, strict=True):
        losses, weights = alone(cell)
        assert len(member.losses) == len(losses) == 6
        assert member.losses == pytest.approx(losses, rel=1e-4, abs=1e-5)
        assert set(member.final_state) == set(weights)
        for k, w in weights.items():
            torch.testing.assert_close(member.final_state[k], w, rtol=1e-3, atol=1e-4, msg=k)
    # the members really differ (a stack that trained one model k times would pass above only
    # if the cells were identical)
    a, b = pack.members
    assert a.losses != b.losses


def test_a_packed_vit_draws_its_own_drop_path_masks():
    """The strong ViT recipe has drop-path: random under vmap, one mask per member."""
    cells = [tiny("vit", 96, 0, val_size=0, recipe="strong"), tiny("vit", 96, 1, val_size=0)]
    assert pack_key(prepare(cells[0])) != pack_key(prepare(cells[1]))  # recipes never mix
    pack = Pack([prepare(tiny("vit", 96, s, val_size=0, recipe="strong")) for s in (0, 1)])
    pack.fit()
    assert all(len(m.losses) == 6 and m.status == "completed" for m in pack.members)


def test_clipping_is_per_member():
    torch.manual_seed(0)
    models = [torch.nn.Linear(4, 3) for _ in range(3)]
    for i, m in enumerate(models):
        for p in m.parameters():
            p.grad = torch.randn_like(p) * (10.0**i)  # norms ~1, ~10, ~100
    expected = [[p.grad.clone() for p in m.parameters()] for m in models]
    norms = []
    for grads in expected:
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        norms.append(torch.nn.utils.clip_grad_norm_(params, 5.0).item())
    stacked = StackedModels(models, torch.device("cpu"))
    for name, p in stacked.params.items():
        p.grad = torch.stack([dict(m.named_parameters())[name].grad for m in models])
    got = stacked.clip_grad_norms_(5.0)
    assert got.tolist() == pytest.approx(norms, rel=1e-5)
    names = [n for n, _ in models[0].named_parameters()]
    for i in range(3):
        for j, name in enumerate(names):
            torch.testing.assert_close(stacked.params[name].grad[i], expected[i][j])
    assert norms[0] < 5.0 < norms[2]  # one member left alone, one clipped


def test_pack_refuses_cells_of_different_shape_or_steps():
    a, b = prepare(tiny("resnet", 96, 0)), prepare(tiny("resnet", 96, 1, steps=7))
    assert pack_key(a) != pack_key(b)
    with pytest.raises(ValueError, match="share"):
        Pack([a, b])
    assert pack_key(a) == pack_key(prepare(tiny("resnet", 160, 2)))


@pytest.mark.slow
def test_grid_worker_pack_writes_records_like_bench_run(in_tmp):
    sweep = write_sweep(in_tmp, seeds=[0, 1], steps=8)
    assert bench("grid", str(sweep), "--worker", "--pack", "2", "--wandb", "disabled") == 0
    packed = [json.loads(p.read_text()) for p in sorted(in_tmp.glob("results/t/runs/*.json"))]
    assert len(packed) == 2
    assert all(r["execution"]["mode"] == "packed" and r["execution"]["pack"] == 2 for r in packed)
    assert (
        bench(
            "run",
            *(f"--{k}={v}" for k, v in packed[0]["config"].items() if v is not None),
            "--results_dir=alone/runs",
        )
        == 0
    )
    single = json.loads(next(in_tmp.glob("alone/runs/*.json")).read_text())
    assert single["run_id"] == packed[0]["run_id"]
    assert set(single) == set(packed[0]) and set(single["metrics"]) == set(packed[0]["metrics"])
    assert single["execution"] == {"mode": "process", "pack": 1}
    for k in ("test_error", "val_error", "train_loss"):
        assert packed[0]["metrics"][k] == pytest.approx(single["metrics"][k], abs=0.02), k
    _, cell, _, model = load_run(packed[0]["checkpoint"])  # the best checkpoint loads
    assert cell.run_id == packed[0]["run_id"] and model is not None
    for r in (single, *packed):  # where the wall time went, alone and packed
        phases, wall = r["timing"]["phases_s"], r["timing"]["wall_s"]
        assert set(phases) == {"fit_s", "validation_s", "checkpoint_s", "test_s"}
        assert min(phases.values()) > 0
        assert phases["fit_s"] > phases["validation_s"] + phases["checkpoint_s"]
        assert phases["fit_s"] + phases["test_s"] <= wall


def _cxx() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


@pytest.mark.slow
@pytest.mark.skipif(
    _cxx() is None, reason="torch.compile on the CPU needs a C++ compiler (none found)"
)
def test_compiled_cell_trains_and_caches_its_graphs(in_tmp):
    os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    cell = tiny("resnet", 96, 0, steps=3, evals=1, compile_mode="default", study="compiled")
    record = run_cell(cell)
    assert record["status"] == "completed", record["error"]
    assert record["run_id"] == tiny("resnet", 96, 0, steps=3, evals=1).run_id  # runtime field
    cache = Path(os.environ["BENCH_CACHE"]) / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache) and any(cache.rglob("*"))


def test_packed_batchnorm_takes_a_bf16_input():
    """Under CUDA autocast a conv hands its BatchNorm a bf16 tensor, and batch norm under vmap
    refuses it with float32 running statistics (seen on an H200): packed BatchNorm layers
    normalise in float32, as the members do alone."""
    torch.manual_seed(0)
    layers = [torch.nn.Sequential(torch.nn.BatchNorm2d(4)) for _ in range(2)]
    alone_copies = copy.deepcopy(layers)
    stacked = StackedModels(layers, torch.device("cpu"))
    stacked.train(True)
    x = torch.randn(2, 5, 4, 8, 8).bfloat16()
    packed = stacked(x)
    assert packed.dtype == torch.float32
    for i, m in enumerate(alone_copies):
        own = m.train()(x[i].float())
        torch.testing.assert_close(packed[i], own)
        torch.testing.assert_close(stacked.buffers["0.running_mean"][i], m[0].running_mean)
