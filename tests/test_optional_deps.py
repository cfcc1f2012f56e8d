"""vitdata without its optional packages (tqdm, matplotlib, pyyaml), and the air-gapped install.

A package is hidden the way Python sees an uninstalled one: ``sys.modules[name] = None`` makes
``import name`` raise ImportError and ``importlib.util.find_spec(name)`` return None (a meta-path finder
that raises would also break libraries that merely probe for the package, torch among them). In this
process with ``monkeypatch.setitem`` (vitdata imports them lazily, at use), and in a child process for
the end-to-end run.
"""
import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vitdata.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--synthetic-samples", "64", "--batch-size", "16", "--depth", "1", "--image-size", "32", "--patch-size", "8",
        "--workers", "0", "--epochs", "1", "--log-every", "1"]


def _hide(monkeypatch, *names):
    for name in names:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, loaded)
        monkeypatch.setitem(sys.modules, name, None)


def test_without_tqdm_the_progress_bar_is_plain_log_lines(monkeypatch, tmp_path, capsys):
    from vitdata.train import log as runlog

    _hide(monkeypatch, "tqdm")
    log = runlog.Logger(str(tmp_path), 0, total_steps=4, progress=True)
    assert isinstance(log.bar, runlog.PlainProgress)
    log.bar.every_s = 0.0
    for _ in range(4):
        log.progress(1, loss="0.5")
    log.message("epoch 0 done")
    log.close()
    out = capsys.readouterr()
    assert "step 4/4 (100 %) loss=0.5" in out.err and "epoch 0 done" in out.out


def test_without_matplotlib_the_report_writes_summary_md_and_says_once_that_plots_need_matplotlib(
        monkeypatch, tmp_path, capsys):
    from vitdata.train import report

    _hide(monkeypatch, "matplotlib")
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"kind": "step", "step": 0, "epoch": 0.0, "time": 1.0, "loss": 1.0, "lr": 0.1,
                               "img_s": 10.0, "data_ms": 1.0, "step_ms": 2.0, "knobs": {}}) + "\n")
    path = report.write_report(str(tmp_path / "report"), str(log), {"model": "m"})
    assert Path(path).read_text().count("matplotlib is not installed") == 1
    assert sorted(os.listdir(tmp_path / "report")) == ["summary.md"]
    err = capsys.readouterr().err
    assert err.count("matplotlib") >= 1 and err.count("\n") == 1   # one message, naming matplotlib


def test_preview_without_matplotlib_is_an_error_naming_it_with_how_to_install(monkeypatch):
    from vitdata.train import report
    from vitdata.cli import error_line
    from vitdata.optional import MissingDependency

    _hide(monkeypatch, "matplotlib")
    with pytest.raises(MissingDependency) as e:
        report.plot_samples([], "x.png")
    line = error_line("vitdata preview", e.value)
    assert "matplotlib" in line and "pip install matplotlib" in line


def test_a_yaml_config_without_pyyaml_is_a_config_error_naming_pyyaml_and_json_still_works(monkeypatch, tmp_path):
    from vitdata.train.config import parse_config

    _hide(monkeypatch, "yaml")
    (tmp_path / "c.yaml").write_text("epochs: 3\n")
    with pytest.raises(ConfigError) as e:
        parse_config(["--config", str(tmp_path / "c.yaml")])
    assert "pyyaml" in str(e.value) and "pip install pyyaml" in str(e.value) and e.value.fields == ("config",)
    (tmp_path / "c.json").write_text(json.dumps({"epochs": 3, "batch-size": 8}))
    cfg = parse_config(["--config", str(tmp_path / "c.json")])
    assert cfg.epochs == 3 and cfg.batch_size == 8


def test_a_config_file_that_is_not_a_mapping_is_refused(tmp_path):
    from vitdata.train.config import parse_config

    (tmp_path / "c.json").write_text("[1, 2]")
    with pytest.raises(ConfigError) as e:
        parse_config(["--config", str(tmp_path / "c.json")])
    assert e.value.fields == ("config",)


@pytest.mark.heavy
def test_vitdata_help_and_a_tiny_train_run_without_tqdm_matplotlib_and_pyyaml(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        for name in ("tqdm", "matplotlib", "yaml"):
            sys.modules[name] = None
        from vitdata.cli import main
        assert main(["--help"]) == 0
        rc = main(["train", *{TINY!r}, "--progress", "--out", {str(tmp_path / "run")!r}])
        loaded = [m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in ("tqdm", "matplotlib",
                                                                                               "yaml")]
        assert not loaded, loaded
        raise SystemExit(rc)
        """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), VITDATA_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = tmp_path / "run" / "report"
    assert sorted(os.listdir(report)) == ["summary.md"]
    assert r.stderr.count("PNG plots skipped: matplotlib is not installed") == 1
    assert "usage" in r.stdout.lower()


@pytest.mark.heavy
def test_air_gapped_install_uses_what_is_installed_and_runs(tmp_path):
    """``pip install --no-deps --no-build-isolation -e .`` with no index, into a venv that sees the packages
    already installed. The test's interpreter is itself a venv, whose packages ``--system-site-packages``
    would not reach (it exposes the base interpreter's), so a .pth file adds them: on a GPU host they are
    the system's."""
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        p = ROOT / f
        if p.is_file() and not p.is_symlink():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, src / f)
        elif p.is_symlink():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(p), src / f)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    vsite = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    Path(vsite, "parent_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    # no index, and no config file that could name find-links or extra indexes
    env.update(PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
               VITDATA_CACHE=str(tmp_path / "cache"))
    pip = [str(vpy), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", str(src)]
    r = subprocess.run(pip, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    where = subprocess.run([str(vpy), "-P", "-c", "import vitdata, vitdata.kernels; print(vitdata.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(src)), where
    exe = venv / "bin" / "vitdata"
    r = subprocess.run([str(exe), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "train" in r.stdout, r.stderr[-2000:]
    r = subprocess.run([str(exe), "train", *TINY, "--no-progress", "--no-report", "--out", str(tmp_path / "run")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["step"] > 0
