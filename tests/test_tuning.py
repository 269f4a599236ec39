"""bench tune: a tuning grid read per cell; bench analyze refuses to pool it as seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bench.analysis.analyze import analyze
from bench.analysis.tuning import tune
from bench.analysis.tuning_plot import over_n_series
from bench.errors import BenchError
from tests.conftest import REPO, bench
from tests.test_statistics import record as stats_record

LRS = (3e-4, 1e-3, 3e-3)
WDS = (0.01, 0.05)


def record(folder, family, seed, val, test, n_val=2000, n=10_000, **config):
    """A completed record of one cell under the settings ``config``."""
    tag = "-".join(f"{k}{v:g}" for k, v in sorted(config.items()) if isinstance(v, float))
    stats_record(folder, family, "xs", n, seed, test, val=val, n_val=n_val, tag=tag, **config)


def lr_wd_grid(folder, seeds=(0,)):
    """ResNet: best at the middle lr with wd 0.05, clearly. ViT: best at the largest lr (an edge),
    by less than the noise; its test error would pick another lr (the choice must not)."""
    for seed in seeds:
        for lr in LRS:
            for wd in WDS:
                res = 0.30 + 0.04 * abs(LRS.index(lr) - 1) + (0.05 if wd == 0.01 else 0.0)
                vit = 0.40 - 0.001 * LRS.index(lr) + (0.03 if wd == 0.01 else 0.0)
                vit_test = vit + (0.05 if lr == LRS[-1] else 0.0)
                s = 0.001 * seed
                record(folder, "resnet", seed, res + s, res + s, lr=lr, weight_decay=wd)
                record(folder, "vit", seed, vit + s, vit_test + s, lr=lr, weight_decay=wd)


def test_tune_picks_on_validation_flags_edges_and_unresolved_winners(tmp_path):
    lr_wd_grid(tmp_path)
    doc = tune(tmp_path)
    assert doc["axes"] == ["lr", "weight_decay"]
    resnet, vit = doc["cells"]
    assert resnet["family"] == "resnet" and resnet["best"] == {"lr": 1e-3, "weight_decay": 0.05}
    assert resnet["edges"] == {}  # two weight decays: too few to call an edge
    assert resnet["resolved"] and resnet["margin"] == pytest.approx(0.04)
    # the vit's choice is on validation error (lr 3e-3), though its test error is the worst there
    assert vit["best"] == {"lr": 3e-3, "weight_decay": 0.05}
    assert vit["edges"] == {"lr": "high"}
    assert not vit["resolved"]  # 0.1 points against the validation set's binomial noise
    text = (tmp_path / "tuning.md").read_text()
    assert "**lr at the high edge of the grid**" in text
    assert "**within the noise: not resolved**" in text
    assert json.loads((tmp_path / "tuning.json").read_text())["cells"][1]["best"]["lr"] == 3e-3
    assert (tmp_path / "figures" / "tuning.png").stat().st_size > 10_000


def test_seeds_of_a_setting_set_the_noise(tmp_path):
    lr_wd_grid(tmp_path, seeds=(0, 1, 2))
    resnet, vit = tune(tmp_path)["cells"]
    best = resnet["options"][0]
    assert best["seeds"] == 3 and best["val_std"] == pytest.approx(0.001)
    assert resnet["noise"] < 0.01 and resnet["resolved"]
    assert not vit["resolved"]  # a 0.1-point margin with seed std 0.1 overlaps at 95%


def test_one_setting_is_a_line_per_cell(tmp_path):
    for i, lr in enumerate(LRS):
        for fam in ("resnet", "vit"):
            record(tmp_path, fam, 0, 0.3 + 0.05 * i, 0.3, lr=lr, lr_scale=lr / 1e-3)
    doc = tune(tmp_path)
    assert doc["axes"] == ["lr"]  # lr_scale varies with it: the lr alone is shown
    assert all(c["best"] == {"lr": 3e-4} and c["edges"] == {"lr": "low"} for c in doc["cells"])
    assert (tmp_path / "figures" / "tuning.png").exists()


def recipe_record(folder, seed, val, recipe, resolved_optimizer, n=10_000, **given):
    """A ResNet record of ``recipe`` whose record block says what the recipe resolved to."""
    tag = f"{recipe}-{resolved_optimizer}"
    stats_record(folder, "resnet", "xs", n, seed, val, val=val, tag=tag, recipe=recipe, **given)
    path = next((Path(folder) / "runs").glob(f"*-n{n}-s{seed}-*-{tag}.json"))
    rec = json.loads(path.read_text())
    rec["recipe"] = {"name": recipe, "optimizer": resolved_optimizer, "lr": 0.03}
    path.write_text(json.dumps(rec))


def test_a_recipe_field_stated_in_one_record_and_defaulted_in_another_is_one_setting(tmp_path):
    recipe_record(tmp_path, 0, 0.27, "basic", "adamw")  # AdamW by the recipe's default
    recipe_record(tmp_path, 0, 0.29, "strong", "adamw", optimizer="adamw")  # AdamW stated
    assert tune(tmp_path)["axes"] == ["recipe"]
    text = (tmp_path / "tuning.md").read_text()
    assert "| **basic** | 27.00 |" in text and "nan" not in text
    # the strong recipe's own default (SGD) is another optimizer: shown beside the recipe
    recipe_record(tmp_path, 0, 0.31, "strong", "sgd")
    assert tune(tmp_path)["axes"] == ["recipe", "optimizer"]


def test_a_recipe_over_several_n_is_drawn_against_n(tmp_path):
    for n, basic, strong in ((3000, 0.41, 0.34), (10_000, 0.27, 0.29)):
        recipe_record(tmp_path, 0, basic, "basic", "adamw", n=n)
        recipe_record(tmp_path, 0, strong, "strong", "adamw", n=n, optimizer="adamw")
    doc = tune(tmp_path)
    assert [c["best"] for c in doc["cells"]] == [{"recipe": "strong"}, {"recipe": "basic"}]
    assert doc["figure"] == "tuning.png"
    assert (tmp_path / "figures" / "tuning.png").stat().st_size > 10_000


def test_a_recipe_over_n_carries_its_seed_spread_where_it_has_seeds(tmp_path):
    for seed, (basic, strong) in enumerate(((0.41, 0.34), (0.40, 0.36))):
        recipe_record(tmp_path, seed, basic, "basic", "adamw", n=3000)
        recipe_record(tmp_path, seed, strong, "strong", "adamw", n=3000, optimizer="adamw")
    recipe_record(tmp_path, 0, 0.27, "basic", "adamw")
    recipe_record(tmp_path, 0, 0.29, "strong", "adamw", optimizer="adamw")
    series = over_n_series(tune(tmp_path), "recipe")
    (n_few, val, std), (n_many, _, one_seed) = series[("resnet", "xs", "", "strong")]
    assert (n_few, n_many) == (3000, 10_000)
    assert val == pytest.approx(35.0) and std == pytest.approx(1.4142, abs=1e-3)
    assert one_seed != one_seed  # NaN: one seed has no spread to draw


def test_nothing_tuned_is_an_error_that_points_to_analyze(tmp_path):
    for seed in range(3):
        record(tmp_path, "resnet", seed, 0.3, 0.3, lr=1e-3)
    with pytest.raises(BenchError, match="nothing was tuned.*bench analyze"):
        tune(tmp_path)


def test_analyze_refuses_to_pool_a_tuning_grid_as_seeds(tmp_path, capsys):
    lr_wd_grid(tmp_path)
    with pytest.raises(BenchError, match=r"differ in lr, weight_decay.*bench tune"):
        analyze(tmp_path, bootstrap=0)
    assert bench("analyze", str(tmp_path), "--bootstrap", "0") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not seeds of one experiment" in err
    assert not (tmp_path / "report.md").exists()


def test_analyze_leaves_out_runs_started_from_a_parent(tmp_path):
    for n in (1000, 3000, 10_000):
        for seed in range(2):
            for fam, err in (("resnet", 0.3), ("vit", 0.35)):
                e = err * (1000 / n) ** 0.3
                record(tmp_path, fam, seed, e, e, n=n, lr=1e-3)
    # a ViT fine-tuned at 64 px from its 32 px parent: another experiment, same cell keys
    record(tmp_path, "vit", 0, 0.01, 0.01, n=10_000, lr=1e-4, img_size=64.0, parent="vit-p")
    doc = analyze(tmp_path, bootstrap=0)
    assert doc["records"]["used"] == 12
    assert any("1 records started from another run's weights" in n for n in doc["notes"])


@pytest.mark.slow
def test_bench_tune_reads_a_real_lr_grid(in_tmp, capsys):
    """Real cells: a tiny lr grid trained by `bench grid`, read by `bench tune`."""
    sweep = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    sweep["name"] = "lr"
    params = sweep["parameters"]
    params.update(
        study={"value": "lr"},
        family={"value": "resnet"},
        size={"value": "xxs"},
        n_train={"value": 300},
        steps={"value": 40},
        lr_scale={"values": [0.1, 1.0, 10.0]},
    )
    Path("lr.yaml").write_text(yaml.safe_dump(sweep))
    assert bench("study", "lr.yaml", "--wandb=disabled") == 0  # the grid, then its table
    assert "tuning.md" in capsys.readouterr().out
    Path("results/lr/tuning.md").unlink()
    assert bench("tune", "results/lr") == 0
    out = capsys.readouterr().out
    doc = json.loads(Path("results/lr/tuning.json").read_text())
    (cell,) = doc["cells"]
    assert doc["axes"] == ["lr"] and len(cell["options"]) == 3
    assert sorted(o["settings"]["lr"] for o in cell["options"]) == pytest.approx([2e-4, 2e-3, 2e-2])
    assert "| lr | val error (%)" in out and "- choice: lr = " in out
    assert bench("analyze", "results/lr", "--bootstrap", "0") == 2
