"""vitdata train: the default run end to end at tiny settings, each switch's effect, DDP on gloo, resume."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vitdata.errors import ConfigError
from vitdata.train.config import TrainConfig, check_train_config, parse_config
from vitdata.train.loop import build_schedule, main
from vitdata.train.lr import lr_at

ROOT = Path(__file__).resolve().parents[2]
# Tiny and fast: 600 synthetic images (540 train / 60 val), 32 px, patch 8, one block.
TINY = ["--synthetic-samples", "600", "--batch-size", "32", "--depth", "1", "--image-size", "32", "--patch-size", "8",
        "--workers", "1", "--no-progress", "--log-every", "1"]


def read_log(run):
    return [json.loads(line) for line in open(run / "log.jsonl")]


# ---------------------------------------------------------------------------------------------------
# configuration


def test_recipe_presets_are_overridden_by_yaml_and_yaml_by_the_command_line(tmp_path):
    cfg = parse_config(["--recipe", "data-centric"])
    assert cfg.oracle == "data-centric" and cfg.patch_erasing == 0.3
    y = tmp_path / "c.yaml"
    y.write_text("patch_erasing: 0.1\nepochs: 3\nrecipe: pss\n")
    cfg = parse_config(["--config", str(y)])
    assert cfg.pss == "cyclic" and cfg.global_pool == "avg" and cfg.patch_erasing == 0.1 and cfg.epochs == 3
    cfg = parse_config(["--config", str(y), "--epochs", "5", "--recipe", "baseline"])
    assert cfg.epochs == 5 and cfg.pss is None and cfg.patch_erasing == 0.1


def test_every_recipe_parses_to_a_valid_config():
    from vitdata.train.config import RECIPES, check_train_config
    for r in RECIPES:
        check_train_config(parse_config(["--recipe", r]))


def test_locality_with_pss_is_refused_before_any_data_is_read(cache):
    with pytest.raises(ConfigError) as e:
        main(["--locality", "--pss", "cyclic"])
    assert {"locality", "pss"} <= set(e.value.fields)
    assert not cache.exists()


def test_dist_timeout_is_parsed_in_seconds_and_must_be_positive():
    from vitdata.train.config import check_train_config
    assert parse_config([]).dist_timeout == 600.0 and parse_config(["--dist-timeout", "30"]).dist_timeout == 30.0
    with pytest.raises(ConfigError) as e:
        check_train_config(parse_config(["--dist-timeout", "0"]))
    assert e.value.fields == ("dist_timeout",)


def test_unknown_yaml_option_is_named(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("epoch: 3\n")
    with pytest.raises(ConfigError, match="epoch"):
        parse_config(["--config", str(y)])


# ---------------------------------------------------------------------------------------------------
# each switch changes what it should (unit level)


def knobs_by_epoch(cfg, spe=10):
    s = build_schedule(cfg, spe)
    return [[s(e, i) for i in range(spe)] for e in range(cfg.epochs)]


def test_no_switch_gives_constant_knobs():
    ks = knobs_by_epoch(TrainConfig(epochs=5))
    flat = {k for row in ks for k in row}
    assert len(flat) == 1
    (k,) = flat
    assert k.image_size == 64 and k.lowpass_size is None and k.erase_ratio == 0 and k.keep_ratio == 1.0


def test_efficienttrain_curriculum_lowpasses_early_and_raises_randaug_magnitude():
    ks = knobs_by_epoch(TrainConfig(epochs=10, image_size=64, patch_size=8, curriculum="efficienttrain"))
    assert ks[0][0].lowpass_size is not None and ks[0][0].lowpass_size < 64
    assert ks[-1][0].lowpass_size is None
    mags = [row[0].randaug_magnitude for row in ks]
    assert mags == sorted(mags) and mags[0] < mags[-1]


def test_efficienttrain_pp_augments_at_full_size_and_resizes_unless_asked_to_crop_at_the_segments_side():
    released = knobs_by_epoch(TrainConfig(epochs=20, image_size=64, patch_size=4, curriculum="efficienttrain++"))
    assert {row[0].image_size for row in released} == {64}
    assert released[0][0].lowpass_size < 64 and released[0][0].lowpass_filter == "lanczos"
    direct = knobs_by_epoch(TrainConfig(epochs=20, image_size=64, patch_size=4, curriculum="efficienttrain++",
                                        curriculum_augment_at="stage"))
    assert [row[0].image_size for row in direct] == [row[0].lowpass_size or 64 for row in released]
    with pytest.raises(ConfigError, match="curriculum-augment-at"):
        check_train_config(parse_config(["--curriculum", "efficienttrain", "--curriculum-augment-at", "stage"]))


def test_size_curriculum_grows_the_image_size_in_patch_steps():
    ks = knobs_by_epoch(TrainConfig(epochs=8, image_size=64, patch_size=8, size_curriculum=True))
    sizes = [row[0].image_size for row in ks]
    assert sizes[0] == 16 and sizes[-1] == 64 and sizes == sorted(sizes)
    assert all(s % 8 == 0 for s in sizes)


def test_pss_schedule_cycles_the_keep_ratio_within_an_epoch_and_ends_full():
    ks = knobs_by_epoch(TrainConfig(epochs=30, pss="cyclic", image_size=32, patch_size=8), spe=10)
    first = [k.keep_ratio for k in ks[0]]
    assert first[0] == pytest.approx(0.2) and max(first) == 1.0 and min(first) == pytest.approx(0.2)
    assert all(k.keep_ratio == 1.0 for k in ks[-1])  # cool-down epoch: full tokens


def test_patch_erasing_sets_the_erase_ratio():
    ks = knobs_by_epoch(TrainConfig(epochs=2, patch_erasing=0.25))
    assert {k.erase_ratio for row in ks for k in row} == {0.25}


def test_the_train_loader_lays_out_the_switches_as_the_preview_and_the_compute_estimate_do(cache, tmp_path):
    from vitdata.data import selfid
    from vitdata.loader.loader import create_loader
    from vitdata.train.loop import loader_config
    root = tmp_path / "d"
    selfid.write_imagefolder(str(root), 64, num_classes=4, size=32)
    cfg = parse_config(["--recipe", "data-centric", "--size-curriculum", "--epochs", "4", "--image-size", "32",
                        "--patch-size", "8", "--batch-size", "8", "--backend", "torch", "--workers", "0"])
    loader = create_loader(loader_config(cfg, str(root), str(root), 0, 1, "cpu"))
    try:
        assert loader.schedule == build_schedule(cfg, len(loader)) and loader.schedule.epochs == 4
        assert loader.schedule(0, 0).image_size == 16 and loader.schedule(0, 0).erase_ratio == 0.3
    finally:
        loader.close()


def test_the_loops_criterion_is_timms_soft_target_loss_under_mixup_and_smoothed_cross_entropy_otherwise():
    from timm.loss import SoftTargetCrossEntropy

    from vitdata.loader.loss import per_sample_loss
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)   # what train() hands to loader.loss
    torch.manual_seed(0)
    logits, soft = torch.randn(6, 10), torch.softmax(torch.randn(6, 10), -1)
    per = per_sample_loss(logits, soft, criterion)
    assert per.shape == (6,)
    assert torch.allclose(per.mean(), SoftTargetCrossEntropy()(logits, soft))   # Mixup's targets hold the smoothing
    hard = torch.randint(0, 10, (6,))
    assert torch.allclose(per_sample_loss(logits, hard, criterion).mean(),
                          torch.nn.functional.cross_entropy(logits, hard, label_smoothing=0.1))


def test_lr_warms_up_linearly_then_follows_a_cosine():
    lrs = [lr_at(s, 100, 10, 1.0, 0.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.5, abs=0.02) and lrs[-1] < 0.01
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


# ---------------------------------------------------------------------------------------------------
# end to end


@pytest.mark.heavy
@pytest.mark.filterwarnings("error:invalid value encountered:RuntimeWarning")  # NaN pixels in the report
def test_default_run_at_tiny_settings_trains_and_writes_log_checkpoint_and_report(cache, tmp_path):
    run = tmp_path / "run"
    assert main(TINY + ["--epochs", "2", "--out", str(run)]) == 0
    log = read_log(run)
    steps = [r for r in log if r["kind"] == "step"]
    evals = [r for r in log if r["kind"] == "eval"]
    assert len(steps) == 2 * (540 // 32) and len(evals) == 2
    assert all({"data_ms", "step_ms", "img_s", "lr", "knobs", "loss"} <= set(r) for r in steps)
    assert evals[-1]["count"] == 60 and 0 <= evals[-1]["top1"] <= 100
    for name in ("loss_acc.png", "throughput.png", "knobs.png", "samples.png", "summary.md"):
        assert (run / "report" / name).stat().st_size > 0
    assert (run / "checkpoint" / "manifest.json").exists()
    result = json.loads((run / "result.json").read_text())
    assert result["step"] == len(steps)


@pytest.mark.heavy
def test_method_switches_reach_the_model_loader_and_oracle(cache, tmp_path):
    run = tmp_path / "run"
    # patch 4: 8-px patches at 32 px would merge EfficientTrain's stages (refused, docs/methods.md §3.2)
    main(TINY + ["--epochs", "2", "--out", str(run), "--curriculum", "efficienttrain", "--patch-size", "4",
                 "--pss", "cyclic",
                 "--pss-mode", "random", "--patch-erasing", "0.25", "--oracle", "data-centric", "--drloc", "0.5",
                 "--drloc-schedule", "constant", "--mixup", "0.8", "--cutmix", "1.0"])
    log = read_log(run)
    steps = [r for r in log if r["kind"] == "step"]
    knobs = [r["knobs"] for r in steps]
    assert {k["keep_ratio"] for k in knobs} > {1.0}
    assert any(k["lowpass_size"] for k in knobs) and all(k["erase_ratio"] == 0.25 for k in knobs)
    assert all("drloc_loss" in r and r["knobs"]["drloc_lambda"] == 0.5 for r in steps)
    oracle = [r for r in log if r["kind"] == "epoch" and r.get("oracle")]
    assert [r["epoch"] for r in oracle] == [1, 2]
    assert all(0 <= r["oracle"]["ddp_e"] <= 1 and r["oracle"]["kar"] >= 0 for r in oracle)
    assert (run / "report" / "oracle.png").exists()


@pytest.mark.heavy
def test_locality_and_size_curriculum_run(cache, tmp_path):
    run = tmp_path / "run"
    main(TINY + ["--epochs", "2", "--out", str(run), "--locality", "--size-curriculum", "--ema", "0.9"])
    sizes = [r["knobs"]["image_size"] for r in read_log(run) if r["kind"] == "step"]
    assert sizes[0] == 16 and sizes[-1] == 32


@pytest.mark.heavy
def test_kill_and_resume_continues_exactly(cache, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    args = TINY + ["--epochs", "2", "--mixup", "0.8", "--drop-path", "0.1", "--pss", "cyclic", "--pss-mode", "random"]
    main(args + ["--out", str(full)])
    # stop mid-epoch 0 (16 steps per epoch), then resume across the epoch boundary to the end
    main(args + ["--out", str(part), "--max-steps", "11"])
    assert json.loads((part / "result.json").read_text())["step"] == 11
    with open(part / "log.jsonl", "a") as fh:  # as if the killed run had logged past its checkpoint
        fh.write(json.dumps({"kind": "step", "step": 11, "time": 1e9, "loss": -1.0}) + "\n")
    main(args + ["--resume", str(part)])
    a = {r["step"]: r["loss"] for r in read_log(full) if r["kind"] == "step"}
    b = {r["step"]: r["loss"] for r in read_log(part) if r["kind"] == "step"}
    assert sorted(a) == sorted(b) == list(range(32))
    assert all(a[s] == pytest.approx(b[s], rel=1e-5, abs=1e-6) for s in a), [(s, a[s], b[s]) for s in a]
    ea = [r["top1"] for r in read_log(full) if r["kind"] == "eval"]
    eb = [r["top1"] for r in read_log(part) if r["kind"] == "eval"]
    assert ea == eb


def test_checkpoint_round_trips_optimizer_state_and_numpy_arrays(tmp_path):
    from vitdata.train import checkpoint
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(m.parameters())
    m(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"model": m.state_dict(), "opt": opt.state_dict(), "arr": np.arange(4, dtype=np.float16),
             "t": (1, "a"), "none": None}
    checkpoint.save(str(tmp_path), state, 3)
    back = checkpoint.load(str(tmp_path))
    assert back["arr"].dtype == np.float16 and back["t"] == (1, "a") and back["none"] is None
    torch.optim.AdamW(m.parameters()).load_state_dict(back["opt"])
    part = next(tmp_path.glob("tensors-*"))
    part.write_bytes(part.read_bytes()[:-1] + b"\0")
    from vitdata.errors import StateError
    with pytest.raises(StateError, match="sha256"):
        checkpoint.load(str(tmp_path))


@pytest.mark.heavy
def test_two_process_gloo_run_completes_and_resumes(cache, tmp_path):
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with socket.socket() as sock:  # a free port, so concurrent test runs do not collide
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [sys.executable, "-P", "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port,
           "-m", "vitdata", "train", *TINY, "--epochs", "2", "--batch-size", "16", "--out", str(run)]
    for extra in (["--max-steps", "10"], ["--resume", str(run)]):  # stop mid-epoch 0, then finish
        p = subprocess.run(cmd + extra, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads((run / "result.json").read_text())
    assert result["step"] == 2 * (540 // 32) and result["val_count"] == 60
    steps = [r["step"] for r in read_log(run) if r["kind"] == "step"]
    assert steps == list(range(2 * (540 // 32)))


@pytest.mark.heavy
def test_sigkill_mid_run_then_resume_matches_the_uninterrupted_run(cache, tmp_path):
    """A real kill -9 (not a clean stop): the run dies between checkpoints, mid-epoch, with log lines and
    oracle reports past its last checkpoint; the resumed run must equal the uninterrupted one."""
    import signal
    import time

    full, part = tmp_path / "full", tmp_path / "part"
    args = TINY + ["--epochs", "2", "--oracle", "weighted", "--ckpt-every", "3"]
    # All three runs use one intra-op thread: a float reduction split over 1 or 2 threads rounds
    # differently, and the losses would then drift apart by the chaos of training, not by a resume bug.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(args + ["--out", str(full)])
    finally:
        torch.set_num_threads(threads)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-P", "-m", "vitdata", "train", *args, "--out", str(part)],
                             env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = part / "checkpoint" / "manifest.json"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if manifest.exists() and json.loads(manifest.read_text()).get("step", 0) >= 6:
                break
            time.sleep(0.05)
        assert child.poll() is None, "the run ended before it could be killed: " + child.stderr.read().decode()[-2000:]
        time.sleep(0.3)  # let it run past the checkpoint
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    killed_at = json.loads(manifest.read_text())["step"]
    assert 6 <= killed_at < 2 * (540 // 32)
    torch.set_num_threads(1)
    try:
        main(args + ["--resume", str(part)])
    finally:
        torch.set_num_threads(threads)
    a = {r["step"]: r["loss"] for r in read_log(full) if r["kind"] == "step"}
    b = {r["step"]: r["loss"] for r in read_log(part) if r["kind"] == "step"}
    assert sorted(a) == sorted(b) == list(range(2 * (540 // 32)))
    off = [(s, a[s], b[s]) for s in a if a[s] != pytest.approx(b[s], rel=1e-5, abs=1e-6)]
    assert not off, f"killed at step {killed_at}; steps past tolerance (step, uninterrupted, resumed): {off}"
    assert [r["top1"] for r in read_log(full) if r["kind"] == "eval"] == \
           [r["top1"] for r in read_log(part) if r["kind"] == "eval"]


# ---------------------------------------------------------------------------------------------------
# where a run writes; --workers


def snapshot(folder):
    """The run's files; not ``run.lock``, which names whichever run last held the folder (J6)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "run.lock"}


@pytest.mark.heavy
def test_resuming_a_copied_run_writes_into_the_copy_and_never_into_the_original(cache, tmp_path):
    import shutil

    from vitdata.errors import StateError
    a, b = tmp_path / "A", tmp_path / "B"
    main(TINY + ["--epochs", "1", "--no-report", "--out", str(a), "--max-steps", "3"])
    shutil.copytree(a, b, symlinks=True)
    original = snapshot(a)
    main(["--resume", str(b), "--max-steps", "5"])  # B's config.json still says out=A
    assert snapshot(a) == original
    assert json.loads((b / "checkpoint" / "manifest.json").read_text())["step"] == 5
    assert json.loads((b / "config.json").read_text())["out"] == str(b)
    assert json.loads((b / "result.json").read_text())["out"] == str(b)
    # A failed resume (a damaged checkpoint) writes nothing, here or there.
    part = next((b / "checkpoint").glob("tensors-*"))
    data = part.read_bytes()
    part.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    copy = snapshot(b)
    with pytest.raises(StateError):
        main(["--resume", str(b), "--max-steps", "7"])
    assert snapshot(a) == original and snapshot(b) == copy


@pytest.mark.heavy
def test_workers_0_reads_in_the_loader_thread_with_one_dali_thread(cache, tmp_path):
    from vitdata.train.loop import loader_config
    lcfg = loader_config(parse_config(["--workers", "0"]), "train", "val", 0, 1, torch.device("cpu"), None)
    assert (lcfg.num_workers, lcfg.num_threads) == (0, 1)
    assert main(TINY + ["--workers", "0", "--epochs", "1", "--max-steps", "2", "--out", str(tmp_path / "run")]) == 0


# ---------------------------------------------------------------------------------------------------
# timing: no per-step device sync


class FakeEvent:
    """A CUDA event on a fake stream whose clock (ms) the test sets before each record."""

    def __init__(self, cuda, enable_timing=False):
        self.cuda, self.t = cuda, None

    def record(self):
        self.t = self.cuda.now

    def synchronize(self):
        self.cuda.calls.append("event.synchronize")

    def elapsed_time(self, end):
        return float(end.t - self.t)


class FakeCuda:
    def __init__(self):
        self.now, self.calls = 0.0, []

    def Event(self, enable_timing=False):  # noqa: N802 (torch.cuda's name)
        return FakeEvent(self, enable_timing)

    def synchronize(self):
        self.calls.append("synchronize")


def test_step_timer_on_cuda_times_with_events_and_waits_only_when_read():
    from vitdata.train.loop import StepTimer
    cuda = FakeCuda()
    timer = StepTimer(torch.device("cuda"), cuda=cuda)
    cuda.now = 0.0
    timer.start()
    figures = {}
    # step k: the batch reaches the stream 2 ms after the previous step ended, the step takes 5 + k ms
    t = 0.0
    for k in range(10):
        cuda.now = t = t + 2
        timer.batch_ready()
        cuda.now = t = t + 5 + k
        timer.step_done()
        if (k + 1) % 4 == 0:
            figures[k] = timer.read()
    assert figures == {3: (2.0, 8.0), 7: (2.0, 12.0)}
    assert cuda.calls == ["event.synchronize"] * 2  # one wait per read, never a device-wide sync


def test_step_timer_on_cpu_uses_host_clocks_and_no_cuda_call():
    from vitdata.train.loop import StepTimer
    cuda = FakeCuda()
    timer = StepTimer(torch.device("cpu"), cuda=cuda)
    timer.start()
    timer.batch_ready()
    timer.step_done()
    data_ms, step_ms = timer.read()
    assert data_ms >= 0 and step_ms >= 0 and cuda.calls == []


@pytest.mark.heavy
def test_the_loop_reads_its_timer_on_log_steps_only_and_never_syncs_the_device(cache, tmp_path, monkeypatch):
    import vitdata.train.loop as train_module
    reads = []

    class CountingTimer(train_module.StepTimer):
        steps = 0

        def step_done(self):
            super().step_done()
            CountingTimer.steps += 1

        def read(self):
            reads.append(CountingTimer.steps)
            return super().read()

    def no_sync(*a, **k):
        raise AssertionError("torch.cuda.synchronize called in the training loop")

    monkeypatch.setattr(train_module, "StepTimer", CountingTimer)
    monkeypatch.setattr(torch.cuda, "synchronize", no_sync)
    run = tmp_path / "run"
    main(TINY + ["--epochs", "1", "--max-steps", "9", "--log-every", "4", "--out", str(run)])
    assert reads == [4, 8]
    steps = [r for r in read_log(run) if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [3, 7]
    assert all(r["data_ms"] >= 0 and r["step_ms"] > 0 for r in steps)
