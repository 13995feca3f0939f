import shutil

import pytest

from edgekd.errors import ConfigError, NotFoundError
from edgekd.targets import catalog, get_target, list_targets, load_target_file, shipped_targets_dir

SHIPPED = {
    "local", "qemu-mps2-an386", "rpi4", "rpi5", "jetson-nano", "jetson-orin-nano",
    "coral-devboard", "coral-usb", "nucleo-l4r5zi",
}

GOOD = """
name = "{name}"
description = "test board"
kind = "linux"
[transport]
type = "ssh"
host = "127.0.0.1"
port = 2222
[runtime]
engine = "tflite"
formats = ["tflite-int8"]
"""


def test_every_shipped_target_validates():
    specs = {s.name: s for s in list_targets()}
    assert SHIPPED <= set(specs)
    for spec in specs.values():
        assert spec.description
        if spec.kind in ("linux", "mcu") and spec.name != "coral-usb":
            assert spec.hardware is not None, f"{spec.name} lacks its hardware facts"
    assert specs["qemu-mps2-an386"].transport.type == "qemu"
    assert specs["nucleo-l4r5zi"].flash is not None
    assert specs["jetson-nano"].power.sources[:2] == ["ina3221", "tegrastats"]


def test_misspelled_key_names_file_key_and_suggestion(tmp_path):
    path = tmp_path / "board.toml"
    path.write_text(GOOD.format(name="board").replace("host =", "hots ="))
    with pytest.raises(ConfigError) as exc:
        load_target_file(path)
    text = str(exc.value)
    assert str(path) in text
    assert "'transport.hots'" in text and "did you mean 'host'" in text


def test_wrong_type_names_file_and_key(tmp_path):
    path = tmp_path / "board.toml"
    path.write_text(GOOD.format(name="board").replace("port = 2222", 'port = "twenty"'))
    with pytest.raises(ConfigError, match=r"board.toml: 'transport.port'.*got 'twenty'"):
        load_target_file(path)


def test_unknown_transport_type_suggests(tmp_path):
    path = tmp_path / "board.toml"
    path.write_text(GOOD.format(name="board").replace('type = "ssh"', 'type = "shh"'))
    with pytest.raises(ConfigError, match=r"'transport' has unknown type 'shh' \(did you mean 'ssh'\?\)"):
        load_target_file(path)


def test_format_the_engine_cannot_run_is_rejected(tmp_path):
    path = tmp_path / "board.toml"
    path.write_text(GOOD.format(name="board").replace('["tflite-int8"]', '["edgetpu"]'))
    with pytest.raises(ConfigError, match="cannot run"):
        load_target_file(path)


def test_name_must_match_file(tmp_path):
    path = tmp_path / "board.toml"
    path.write_text(GOOD.format(name="other"))
    with pytest.raises(ConfigError, match="rename the file"):
        load_target_file(path)


def test_unknown_target_suggests_closest():
    with pytest.raises(NotFoundError, match=r"unknown target 'jetson-nan0' \(did you mean 'jetson-nano'\?\)"):
        get_target("jetson-nan0")


def test_extra_dirs_and_env_add_and_override_targets(tmp_path, monkeypatch):
    extra = tmp_path / "mine"
    extra.mkdir()
    (extra / "myboard.toml").write_text(GOOD.format(name="myboard"))
    override = tmp_path / "override"
    override.mkdir()
    shutil.copy(shipped_targets_dir() / "rpi4.toml", override / "rpi4.toml")
    text = (override / "rpi4.toml").read_text().replace('host = "raspberrypi.local"', 'host = "10.0.0.7"')
    (override / "rpi4.toml").write_text(text)
    assert get_target("myboard", [extra]).transport.port == 2222
    monkeypatch.setenv("EDGEKD_TARGETS", str(override))
    assert get_target("rpi4").transport.host == "10.0.0.7"
    assert catalog([extra])["myboard"].path.parent == extra


def test_missing_targets_dir_is_reported(tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        get_target("local", [tmp_path / "nope"])
