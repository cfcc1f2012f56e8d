"""vitdata.cli: every subcommand prints a vitdata error as one line and exits non-zero; --debug and
VITDATA_DEBUG=1 show the traceback."""
import importlib
import os
import subprocess
import sys

import pytest

from vitdata import cli
from vitdata.errors import StateError


@pytest.mark.parametrize("name", sorted(cli.SUBCOMMANDS))
def test_every_subcommand_prints_a_vitdata_error_as_one_line(name, monkeypatch, capsys):
    module = importlib.import_module(cli.SUBCOMMANDS[name][0])

    def fail(argv, prog):
        raise StateError("checkpoint part x is unreadable:\n  line two of the detail")

    monkeypatch.setattr(module, "main", fail)
    monkeypatch.delenv("VITDATA_DEBUG", raising=False)
    assert cli.main([name]) == 1
    err = capsys.readouterr().err
    want = f"vitdata {name}: error: StateError: checkpoint part x is unreadable: line two of the detail\n"
    assert err == want
    with pytest.raises(StateError):
        cli.main(["--debug", name])


def test_error_hint_goes_on_a_second_line():
    e = StateError("bad state")
    e.hint = "delete the cache"
    assert cli.error_line("vitdata x", e).splitlines() == ["vitdata x: error: StateError: bad state",
                                                          "vitdata x: hint: delete the cache"]


def damaged_checkpoint(tmp_path):
    import torch

    from vitdata.train import checkpoint
    d = tmp_path / "run" / "checkpoint"
    checkpoint.save(str(d), {"step": 3, "model": {"w": torch.zeros(2)}}, 3)
    part = next(d.glob("tensors-*"))
    data = part.read_bytes()
    part.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    return d.parent


def run_vitdata(args, tmp_path, **extra_env):
    env = {k: v for k, v in os.environ.items() if k != "VITDATA_DEBUG"}
    env.update(VITDATA_CACHE=str(tmp_path / "cache"), **extra_env)
    return subprocess.run([sys.executable, "-P", "-m", "vitdata", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)


@pytest.mark.heavy
def test_train_resume_on_a_damaged_checkpoint_prints_one_line_and_debug_shows_the_traceback(tmp_path):
    run = damaged_checkpoint(tmp_path)
    p = run_vitdata(["train", "--resume", str(run), "--no-progress"], tmp_path)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    lines = [line for line in p.stderr.splitlines() if line.startswith("vitdata train: error:")]
    assert len(lines) == 1 and "StateError" in lines[0] and "sha256" in lines[0], p.stderr
    for args, env in ((["--debug", "train"], {}), (["train"], {"VITDATA_DEBUG": "1"})):
        p = run_vitdata([*args, "--resume", str(run), "--no-progress"], tmp_path, **env)
        assert p.returncode != 0 and "Traceback" in p.stderr and "StateError" in p.stderr, p.stderr[-2000:]
