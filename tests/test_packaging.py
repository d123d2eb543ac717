"""Packaging: the shipped config presets (by name, from any directory, inside the wheel), ``egovlp configs``, the
one version source, and the optional ``viz`` extra (matplotlib, tensorboard) that the core works without."""

import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import egovlp
from egovlp.cli.main import main
from egovlp.configs import list_presets, preset_text, resolve_config
from egovlp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "egovlp" / "configs"
PRESETS = {
    "eval/charades", "eval/egomcq", "eval/egotaskqa", "eval/epic_mir", "eval/mq", "eval/nlq", "eval/qfvs",
    "extract/mq_video", "extract/nlq_fused", "finetune/charades", "finetune/egotaskqa", "finetune/epic_mir",
    "finetune/mq", "finetune/nlq", "finetune/qfvs", "pretrain/allinone_demo", "pretrain/demo", "pretrain/demo_text",
    "pretrain/egoclip", "pretrain/egovlp_v1",
}  # fmt: skip


def test_every_shipped_yaml_is_a_preset_with_its_first_comment_line():
    presets = list_presets()
    assert set(presets) == PRESETS == {f"{p.parent.name}/{p.stem}" for p in SHIPPED.glob("*/*.yaml")}
    assert list(presets) == sorted(presets)
    assert presets["pretrain/egoclip"] == (
        "EgoVLPv2 pre-training on EgoClip as released: 4 frames, ViT-B/16 + RoBERTa-base, EgoNCE + MLM + 2 x VTM."
    )
    for name, description in presets.items():
        first = (SHIPPED / f"{name}.yaml").read_text().splitlines()[0]
        assert first.startswith(f"# {description}"), name
        assert first == f"# {description}" or first[len(description) + 2 :].startswith(": "), name  # cut at ": "


@pytest.mark.parametrize(
    ("spec", "group", "expected"),
    [
        ("pretrain/egoclip", None, "pretrain/egoclip"),
        ("egoclip", "pretrain", "pretrain/egoclip"),
        ("egoclip", None, "pretrain/egoclip"),  # unique in every group
        ("epic_mir", "finetune", "finetune/epic_mir"),
        ("epic_mir", "eval", "eval/epic_mir"),
        ("eval/epic_mir", "finetune", "eval/epic_mir"),  # a full name ignores the command's group
        ("mq_video", "extract", "extract/mq_video"),
        ("configs/pretrain/demo.yaml", None, "pretrain/demo"),  # the repository paths the docs used
        ("finetune/charades.yaml", None, "finetune/charades"),
    ],
)
def test_preset_names_resolve_from_any_directory(spec, group, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = resolve_config(spec, group)
    assert path.is_file() and path.samefile(SHIPPED / f"{expected}.yaml")
    assert preset_text(spec, group) == path.read_text()


def test_a_folder_named_like_a_preset_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()  # what `make demo` leaves in a checkout
    (tmp_path / "mine").mkdir()
    assert resolve_config("demo", "pretrain").samefile(SHIPPED / "pretrain" / "demo.yaml")
    with pytest.raises(ConfigError, match="config mine is a directory, not a YAML file"):
        resolve_config("mine", "pretrain")


def test_an_existing_path_wins_over_a_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "egoclip").write_text("train:\n  epochs: 1\n")
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "demo").write_text("train:\n  epochs: 2\n")
    assert resolve_config("egoclip", "pretrain") == Path("egoclip")
    assert resolve_config("pretrain/demo") == Path("pretrain/demo")
    assert resolve_config(tmp_path / "egoclip") == tmp_path / "egoclip"


@pytest.mark.parametrize(
    ("spec", "group", "message"),
    [
        ("epic_mir", None, "config preset 'epic_mir' is ambiguous: say which of eval/epic_mir, finetune/epic_mir"),
        ("egoclp", "pretrain", "unknown config 'egoclp' (looked for preset pretrain/egoclp); close presets: "
         "pretrain/egoclip"),
        ("mq_video", "pretrain", "close presets: extract/mq_video"),  # named, but not taken from another group
        ("eval/charade", None, "close presets: eval/charades, finetune/charades"),
        ("missing.yaml", None, "config file missing.yaml not found and no preset of that name (`egovlp configs`"),
        ("zzzz", "eval", "unknown config 'zzzz' (looked for preset eval/zzzz); presets: eval/charades, eval/egomcq, "
         "eval/egotaskqa, eval/epic_mir, eval/mq, eval/nlq, eval/qfvs (`egovlp configs` lists them all)"),
    ],
)  # fmt: skip
def test_unknown_names_fail_with_close_presets(spec, group, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        resolve_config(spec, group)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_commands_load_presets_by_name(tmp_path, monkeypatch):
    from egovlp.cli.common import load_experiment_config
    from egovlp.cli.demo import DEFAULT_CONFIG, TEXT_CONFIG
    from egovlp.tasks.pretrain import PretrainConfig
    from egovlp.tasks.text_mlm import TextMLMConfig

    monkeypatch.chdir(tmp_path)
    cfg = load_experiment_config(PretrainConfig, "egoclip", ["train.epochs=3"], group="pretrain")
    assert (cfg.train.output_dir, cfg.data.num_workers, cfg.train.epochs) == ("runs/pretrain_egoclip", 8, 3)
    assert PretrainConfig().train.output_dir != cfg.train.output_dir  # the YAML was read
    assert load_experiment_config(PretrainConfig, DEFAULT_CONFIG, [], group="pretrain").train.output_dir == "demo/run"
    assert load_experiment_config(TextMLMConfig, TEXT_CONFIG, [], group="pretrain").train.output_dir == "demo/text"
    with pytest.raises(ConfigError, match="unknown config 'egoclip' \\(looked for preset extract/egoclip\\)"):
        load_experiment_config(PretrainConfig, "egoclip", [], group="extract")


def test_configs_command_lists_and_prints(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == sorted(PRESETS)
    egoclip = next(line for line in lines if line.startswith("pretrain/egoclip "))
    assert egoclip.split(None, 1)[1].startswith("EgoVLPv2 pre-training on EgoClip as released")
    assert main(["configs", "finetune/epic_mir"]) == 0
    assert capsys.readouterr().out == (SHIPPED / "finetune" / "epic_mir.yaml").read_text()
    assert main(["configs", "epic_mir", "--group", "eval"]) == 0
    assert capsys.readouterr().out == (SHIPPED / "eval" / "epic_mir.yaml").read_text()
    assert main(["configs", "--group", "extract"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == ["extract/mq_video", "extract/nlq_fused"]
    assert main(["configs", "epic"]) == 1
    assert "error: unknown config 'epic'; close presets: eval/epic_mir, finetune/epic_mir" in capsys.readouterr().err


def test_version_has_one_source():
    from importlib.metadata import version

    assert version("egovlp") == egovlp.__version__
    assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text()
    assert f"## [{egovlp.__version__}]" in (ROOT / "CHANGELOG.md").read_text()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def _run(args: list[str], cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the source tree (so the working tree gets no build/ folder)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src_tree"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp), str(src)]
    done = _run(cmd, cwd=tmp)
    assert done.returncode == 0, done.stderr
    (found,) = tmp.glob("egovlp-*.whl")
    return found


def test_wheel_ships_the_presets_license_and_metadata(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"egovlp/configs/{p}.yaml" for p in PRESETS} <= set(names)
    assert {"egovlp/configs/__init__.py", "egovlp/py.typed"} <= set(names)
    dist = f"egovlp-{egovlp.__version__}.dist-info"
    assert f"{dist}/licenses/LICENSE" in names
    meta = zipfile.ZipFile(wheel).read(f"{dist}/METADATA").decode()
    assert f"\nVersion: {egovlp.__version__}\n" in meta
    assert "\nLicense-Expression: MIT\n" in meta
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    for optional in ("matplotlib", "tensorboard"):  # only through the viz extra
        mentions = [r for r in requires if optional in r]
        assert mentions and all(r.endswith('; extra == "viz"') for r in mentions), mentions


def test_the_installed_wheel_runs_from_another_directory(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # a pure-Python wheel: unpacking it is installing it
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    probe = (
        "import egovlp, sys; from egovlp.configs import resolve_config, list_presets; "
        "print(egovlp.__file__); print(resolve_config('egoclip', 'pretrain')); print(len(list_presets())); "
        "from egovlp.cli.main import main; sys.exit(main(['configs', 'demo_text', '--group', 'pretrain']))"
    )
    done = _run([sys.executable, "-c", probe], cwd=cwd, pythonpath=site)
    assert done.returncode == 0, done.stderr
    module, preset, count, *yaml_lines = done.stdout.splitlines()
    assert Path(module).is_relative_to(site) and Path(preset).is_relative_to(site)
    assert int(count) == len(PRESETS)
    assert "\n".join(yaml_lines) + "\n" == (SHIPPED / "pretrain" / "demo_text.yaml").read_text()
    done = _run([sys.executable, "-m", "egovlp.cli.main", "demo", "--help"], cwd=cwd, pythonpath=site)
    assert done.returncode == 0, done.stderr
    assert "default pretrain/demo)" in " ".join(done.stdout.split())


def test_core_works_without_the_viz_extra(tmp_path, monkeypatch, caplog):
    """matplotlib and tensorboard missing: the demo's plot and the TensorBoard writer say which extra to install."""
    from egovlp.train.plots import plot_losses
    from egovlp.train.writer import MetricsWriter

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"kind": "train", "step": 1, "loss": 2.0}\n')
    with caplog.at_level(logging.WARNING):
        assert plot_losses(metrics, tmp_path / "loss.png") is None
        writer = MetricsWriter(tmp_path, enabled=True, tensorboard=True)
        writer.write("train", 1, {"loss": 2.0})
        writer.close()
    assert not (tmp_path / "loss.png").exists() and not (tmp_path / "tensorboard").exists()
    assert metrics.read_text().splitlines()[-1] == '{"kind": "train", "step": 1, "loss": 2.0}'
    warnings = [r.getMessage() for r in caplog.records]
    assert any("matplotlib is not installed" in w and 'pip install "egovlp[viz]"' in w for w in warnings)
    assert any("tensorboard is not installed" in w and 'pip install "egovlp[viz]"' in w for w in warnings)
