"""Experiment configs: defaults, deep merge, overrides, unknown keys, environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from scl_lle.train.config import DEFAULTS, ConfigError, apply_overrides, expand_path, load_config

REPO = Path(__file__).resolve().parents[1]


def test_file_over_defaults_and_overrides(tmp_path: Path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: exp\noptim: {lr: 0.001}\nloss: {weights: {tv: 100}}\n")
    config = load_config(path, ["optim.lr=3e-4", "loss.weights.exposure=2", "validation.folder=null"])
    assert config["name"] == "exp"
    assert config["optim"]["lr"] == pytest.approx(3e-4)
    assert config["optim"]["grad_clip"] == DEFAULTS["optim"]["grad_clip"]  # untouched defaults survive
    assert config["loss"]["weights"]["tv"] == 100 and config["loss"]["weights"]["exposure"] == 2
    assert config["loss"]["weights"]["colour"] == 8.0
    assert config["validation"]["folder"] is None


def test_unknown_keys_are_errors_with_a_hint(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"optim\.lrr.*did you mean 'lr'"):
        apply_overrides(DEFAULTS, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(DEFAULTS, ["steps"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such config"):
        load_config(tmp_path / "absent.yaml")


def test_data_section_is_free_form():
    config = apply_overrides(DEFAULTS, ["data.crop_size=128"])
    assert config["data"] == {"crop_size": 128}


def test_expand_path(monkeypatch):
    monkeypatch.setenv("SCL_LLE_SHARED", "/data/shared")
    assert expand_path("${SCL_LLE_SHARED}/weights/x.pth") == Path("/data/shared/weights/x.pth")
    monkeypatch.delenv("SCL_LLE_SHARED")
    with pytest.raises(ConfigError, match=r"SCL_LLE_SHARED.*is not set"):
        expand_path("${SCL_LLE_SHARED}/weights/x.pth")


@pytest.mark.parametrize("name", ["scl_lle.yaml", "smoke.yaml"])
def test_shipped_configs_load(name: str):
    config = load_config(REPO / "configs" / name)
    assert config["name"] and config["data"]["labelled"]["layout"] == "camvid"


def test_overrides_merge_into_the_data_section():
    config = apply_overrides(DEFAULTS, ["data.crop_size=128", "data.labelled.layout=camvid"])
    config = apply_overrides(config, ["data.labelled.split=test", "data.max_images=3"])
    assert config["data"] == {"crop_size": 128, "labelled": {"layout": "camvid", "split": "test"}, "max_images": 3}


def test_base_files_apply_first_and_cycles_are_errors(tmp_path: Path):
    (tmp_path / "main.yaml").write_text("name: main\nsteps: 100\noptim: {lr: 0.001, ema_decay: 0.9}\n")
    (tmp_path / "ablations").mkdir()
    child = tmp_path / "ablations" / "child.yaml"
    child.write_text("base: ../main.yaml\nname: child\noptim: {lr: 0.002}\n")
    config = load_config(child, ["steps=7"])
    assert config["name"] == "child" and config["steps"] == 7
    assert config["optim"]["lr"] == pytest.approx(0.002) and config["optim"]["ema_decay"] == pytest.approx(0.9)
    assert "base" not in config
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_ablation_configs_change_only_what_they_name():
    main = load_config(REPO / "configs" / "scl_lle_cpu.yaml")
    ablations = sorted((REPO / "configs" / "ablations").glob("*.yaml"))
    assert len(ablations) >= 4
    for path in ablations:
        config = load_config(path)
        assert config["name"] != main["name"], path
        assert config["data"] == main["data"] and config["optim"] == main["optim"], path
        assert config["steps"] == main["steps"] and config["seed"] == main["seed"], path
