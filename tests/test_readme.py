"""README's commands are the ones CI runs, and the files they name exist."""

import re

from conftest import ROOT


def test_ci_runs_readme_install_and_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, re.S)
    install = next(line for b in blocks for line in b.splitlines() if "pip install" in line)
    assert install.strip() in ci
    assert "pytest" in install


def test_readme_demo_command_names_real_files():
    readme = (ROOT / "README.md").read_text()
    assert "camcli explain sample_images/ --config configs/demo.toml\n" in readme
    for path in ("configs/demo.toml", "sample_images/boxes.csv", "demo/shapes_resnet18.safetensors", "demo/labels.txt"):
        assert (ROOT / path).exists(), path


def test_every_shipped_config_parses():
    from camcli.settings import resolve
    configs = sorted((ROOT / "configs").glob("*.toml"))
    assert len(configs) >= 4
    for cfg in configs:
        settings = resolve({}, cfg, environ={})
        assert settings.model and settings.method
