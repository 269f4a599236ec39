"""Cell fields: every argument form a user or a W&B agent writes, defaults, validation, run_id."""

import pytest

from bench.cell.config import Cell, build_parser, parse_cell_args
from bench.cli import main
from bench.errors import BenchError


def parse(*argv):
    return parse_cell_args(list(argv), build_parser("bench run", ""))[0]


def test_equals_space_and_hyphen_forms_agree():
    a = parse("--family=resnet", "--n_train=2000", "--batch_size=64")
    b = parse("--family", "resnet", "--n-train", "2000", "--batch-size", "64")
    assert a == b
    assert a.n_train == 2000 and a.batch_size == 64 and a.family == "resnet"


def test_agent_renders_none_and_bools_as_strings():
    c = parse("--patch_size=None", "--augment=False", "--epochs=2.5", "--n_train=all")
    assert c.patch_size is None and c.augment is False and c.epochs == 2.5 and c.n_train == "all"


def test_config_file_is_a_base_the_command_line_overrides(tmp_path):
    cfg = tmp_path / "base.yaml"
    cfg.write_text("family: resnet\nsize: m\nlr: 0.002\n")
    c = parse("--config", str(cfg), "--size=xs")
    assert (c.family, c.size, c.lr) == ("resnet", "xs", 0.002)


def test_run_id_is_stable_and_ignores_runtime_fields():
    a = Cell.from_dict({"family": "vit", "n_train": 2000})
    b = Cell.from_dict(
        {"family": "vit", "n_train": "2000", "results_dir": "elsewhere", "wandb": "disabled"}
    )
    c = Cell.from_dict({"family": "vit", "n_train": 2000, "seed": 1})
    assert a.run_id == b.run_id != c.run_id
    assert a.run_id.startswith("vit-s-n2000-s0-")
    # an explicit default patch size is the same experiment as the implicit one
    assert Cell.from_dict({"patch_size": 4}).run_id == Cell.from_dict({}).run_id


@pytest.mark.parametrize(
    "values, field",
    [
        ({"family": "mlp"}, "family"),
        ({"size": "xxl"}, "size"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"patch_size": 5}, "patch_size"),
        ({"lr": 0}, "lr"),
        ({"lr": -1e-3}, "lr"),
        ({"n_train": "many"}, "n_train"),
        ({"n_train": 0}, "n_train"),
        ({"batch_size": "x"}, "batch_size"),
        ({"steps": 10, "epochs": 2}, "steps"),
        ({"dataset": "imagefolder"}, "data_dir"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_fields_name_themselves(values, field):
    with pytest.raises(BenchError, match=field):
        Cell.from_dict(values)


def test_help_lists_every_field_with_its_default(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("--n_train", "--patch_size", "--results_dir", "--wandb", "--examples", "--pool"):
        assert name in out
    assert "(default: 128)" in out and "(default: basic)" in out
