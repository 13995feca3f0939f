import pytest

from edgekd.config import Recipe, load_recipe, parse_overrides, validate
from edgekd.errors import ConfigError, NotFoundError


def _recipe(**over):
    data = {"name": "r", "task": "eye", "student": {"arch": "eye-snn-tiny"}}
    data.update(over)
    return data


def test_unknown_key_names_path_and_suggests():
    with pytest.raises(ConfigError) as exc:
        validate(Recipe, _recipe(train={"epohcs": 3}), "my.toml")
    msg = exc.value.message
    assert "my.toml" in msg and "'train.epohcs'" in msg and "did you mean 'epochs'" in msg
    assert "epochs" in exc.value.hint


def test_unknown_top_level_key_suggests():
    with pytest.raises(ConfigError, match=r"unknown key 'studnet'.*did you mean 'student'"):
        validate(Recipe, _recipe(studnet={"arch": "x"}), "r.toml")


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"'train.epochs'.*got 'many'"):
        validate(Recipe, _recipe(train={"epochs": "many"}), "r.toml")


def test_bad_literal_suggests_choice():
    with pytest.raises(ConfigError, match=r"'task' = 'eyes' is not allowed \(did you mean 'eye'\?\)"):
        validate(Recipe, _recipe(task="eyes"), "r.toml")


def test_unknown_key_inside_list_item():
    with pytest.raises(ConfigError, match=r"'losses\[0\].wieght'.*did you mean 'weight'"):
        validate(Recipe, _recipe(losses=[{"name": "kd", "wieght": 1.0}]), "r.toml")


def test_overrides_parse_toml_scalars_and_nest():
    over = parse_overrides(["train.epochs=3", "train.lr=0.5", "data.source=fer2013", "train.amp=false"])
    assert over == {"train": {"epochs": 3, "lr": 0.5, "amp": False}, "data": {"source": "fer2013"}}


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["train.epochs"])


def test_load_recipe_from_file_with_overrides(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\ntask = "face"\n[train]\nepochs = 2\n')
    recipe = load_recipe(str(path), ["train.epochs=5"])
    assert recipe.train.epochs == 5 and recipe.task == "face"
    with pytest.raises(ConfigError, match=r"with --set.*'train.epoch'"):
        load_recipe(str(path), ["train.epoch=5"])


def test_unknown_recipe_name_is_not_found():
    with pytest.raises(NotFoundError, match="no recipe 'no-such-recipe'"):
        load_recipe("no-such-recipe")


def test_invalid_toml_is_a_config_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("name = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_recipe(str(path))
