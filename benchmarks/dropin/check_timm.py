"""The README's diff, applied to timm's real train.py with ``git apply`` and run as a timm user runs it, on CPU.

    python -P benchmarks/dropin/check_timm.py --timm PATH_TO_PYTORCH_IMAGE_MODELS [--photos DIR] [--work DIR]

``--timm``: a checkout of huggingface/pytorch-image-models (the diff names the commit it is pinned to; the
checkout's train.py is compared with that commit's blob). ``--photos``: an ImageFolder source with ``train/``
and ``val/`` class folders of real photos (default: Imagenette at /work/data/imagenette); the first 4 classes,
16 training and 8 validation photos each, resized to a shorter side of 80 px, make the tiny dataset, and
the same photos as WebDataset shards. train.py runs with ``python -P`` from a scratch folder, so it imports the
installed timm package (the record names its version), never the checkout's.

Each step is one run of the patched train.py (or torchrun of it) with its own outcome and checks:
the diff applies; 2 epochs with the oracle; resumes (a longer ``--epochs``, an older checkpoint, a checkpoint
without loader state); a curriculum from ``VITDATA_CURRICULUM`` or from keys of timm's ``--config`` file, and
its refusals in the user's flags;
``--val-split ''``; ``--model-dtype bfloat16``; ``--dataset wds/...``; distillation (``--kd-model-name``, a
randomly initialised teacher served from a local Hugging Face cache); refused options; the warning when the
criterion line is left out; 2 gloo ranks. The record goes to ``benchmarks/results/cpu/<date>-dropin-timm.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DIFF = Path(__file__).with_name("timm_train.diff")
CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS, SIDE = 4, 16, 8, 80
TIMEOUT = 600


def readme_diff() -> str:
    """The diff block of README.md's timm section, which must equal benchmarks/dropin/timm_train.diff."""
    blocks = re.findall(r"^```diff\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)
    if len(blocks) != 1 or blocks[0] != DIFF.read_text():
        sys.exit("README.md's diff block differs from benchmarks/dropin/timm_train.diff")
    return blocks[0]


def git(*args, cwd=None, check=True) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout.strip() if out.returncode == 0 else ""


def make_photos(src: Path, dest: Path) -> dict:
    """The tiny real-photo ImageFolder (train/, val/) and the same photos as WebDataset shards (wds/)."""
    import io
    import tarfile

    from PIL import Image

    classes = sorted(os.listdir(src / "train"))[:CLASSES]
    for split, n in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for c in classes:
            (dest / split / c).mkdir(parents=True, exist_ok=True)
            for name in sorted(os.listdir(src / split / c))[:n]:
                im = Image.open(src / split / c / name).convert("RGB")
                s = SIDE / min(im.size)
                im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))),
                          Image.BICUBIC).save(dest / split / c / name, quality=90)
    (dest / "wds").mkdir(exist_ok=True)
    for split, shards in (("train", 2), ("val", 1)):
        items = [(k, c, name) for k, c in enumerate(classes) for name in sorted(os.listdir(dest / split / c))]
        per = -(-len(items) // shards)
        for s in range(shards):
            with tarfile.open(dest / "wds" / f"{split}-{s:04d}.tar", "w") as tar:
                for i, (k, c, name) in enumerate(items[s * per:(s + 1) * per]):
                    for ext, data in (("jpg", (dest / split / c / name).read_bytes()), ("cls", str(k).encode())):
                        info = tarfile.TarInfo(f"{split}_{s}_{i:05d}.{ext}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
    return {"classes": classes, "train": CLASSES * TRAIN_PER_CLASS, "val": CLASSES * VAL_PER_CLASS,
            "shorter_side_px": SIDE, "source": str(src)}


def make_teacher_cache(hf_home: Path) -> str:
    """A randomly initialised ``test_vit`` in a local Hugging Face cache: timm's distillation task creates its
    teacher with ``pretrained=True`` and this machine has no network."""
    import timm
    import torch
    from safetensors.torch import save_file

    rev = "0" * 40
    repo = hf_home / "hub" / "models--timm--test_vit.r160_in1k"
    (repo / "snapshots" / rev).mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(repo / "snapshots" / rev / "model.safetensors"))
    return "test_vit"


class Runner:
    """Runs train.py variants and records each step."""

    def __init__(self, work: Path, data: Path, hf_home: Path):
        self.work, self.data, self.steps = work, data, []
        self.env = dict(os.environ, OMP_NUM_THREADS="1", HF_HOME=str(hf_home), HF_HUB_OFFLINE="1",
                        PYTHONWARNINGS="default")
        for name in ("VITDATA_CURRICULUM", "VITDATA_CURRICULUM_KWARGS", "VITDATA_ORACLE"):
            self.env.pop(name, None)
        self.out = work / "output"

    def base(self, experiment: str, epochs: int = 2, model_kwargs: str = "img_size=64") -> list[str]:
        return ["--data-dir", str(self.data), "--model", "test_vit", "--model-kwargs", *model_kwargs.split(),
                "--num-classes", str(CLASSES), "--device", "cpu", "-b", "8", "-j", "0", "--lr", "1e-3", "--seed", "1",
                "--epochs", str(epochs), "--output", str(self.out), "--experiment", experiment, "--log-interval", "4"]

    def run(self, name: str, script: str, args: list[str], env: dict | None = None, ranks: int = 1,
            expect_ok: bool = True) -> dict:
        cmd = [sys.executable, "-P"] + (["-m", "torch.distributed.run", "--nproc_per_node", str(ranks)]
                                        if ranks > 1 else []) + [script, *args]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, cwd=self.work, env=dict(self.env, **(env or {})), capture_output=True, text=True,
                               timeout=TIMEOUT)
            rc, log = p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired as e:
            rc, log = -1, f"timed out after {TIMEOUT} s\n" + str(e.stdout or "") + str(e.stderr or "")
        (self.work / f"{name}.log").write_text(log)
        lines = log.splitlines()
        step = {"name": name, "command": " ".join(["python -P", *cmd[2:]]).replace(str(self.work) + "/", ""),
                "env": env or {}, "ranks": ranks, "returncode": rc, "seconds": round(time.perf_counter() - t0, 1),
                "epochs_trained": sorted({int(m.group(1)) for m in map(re.compile(r"Train: (\d+) ").match, lines) if m}),
                "eval_lines": sum(ln.startswith("Test:") for ln in lines),
                "train_loss": _train_losses(lines),
                "vitdata_warnings": sorted({ln.split("UserWarning: ", 1)[1][:400] for ln in lines
                                            if "UserWarning: " in ln and "vitdata" in ln.lower()}),
                "error": _root_error(lines),
                "checks": {}}
        step["checks"]["exit status as expected"] = (rc == 0) == expect_ok
        self.steps.append(step)
        return step

    def check(self, step: dict, what: str, ok: bool) -> None:
        step["checks"][what] = bool(ok)


def _root_error(lines) -> str | None:
    """The last exception line of the log (a rank's own, ``[rank0]: ValueError: ...``, before torchrun's
    ChildFailedError)."""
    found = [ln for ln in lines if re.match(r"^(\[rank\d+\]: )?[\w.]*(Error|Exception): ", ln)
             and "ChildFailedError" not in ln]
    return found[-1][:500] if found else None


def _train_losses(lines) -> dict:
    """Last running-average training loss logged in each epoch."""
    out = {}
    for ln in lines:
        m = re.match(r"Train: (\d+) .*Loss: \S+ \((\S+)\)", ln)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def loader_state(path: Path) -> dict | None:
    from vitdata.loader.resume import checkpoint_loader_state

    return checkpoint_loader_state(str(path)) if path.exists() else None


def reports(state: dict | None) -> list:
    return [[m["epoch"], m["n_reports"]] for m in ((state or {}).get("oracle") or {}).get("metrics", [])]


def warned(step: dict, text: str) -> bool:
    return any(text in w for w in step["vitdata_warnings"])


ORACLE = {"VITDATA_ORACLE": "data-centric"}
UNREPORTED = "no per-sample loss was reported"


def steps_train_and_resume(r: Runner) -> None:
    """2 epochs with the oracle, then resumes: longer run, older checkpoint, checkpoint without loader state."""
    import torch

    s = r.run("train-2-epochs", "train.py", r.base("a"), ORACLE)
    ck = r.out / "a"
    states = [loader_state(ck / f"checkpoint-{e}.pth.tar") for e in (0, 1)]
    r.check(s, "checkpoint-0 and checkpoint-1 each hold their epoch's finished loader state",
            [(st or {}).get("epoch") for st in states] == [0, 1] and all((st or {}).get("finished") for st in states))
    r.check(s, "the oracle received every sample of both epochs (64 reports each)",
            reports(states[1]) == [[0, 64], [1, 64]])
    r.check(s, "no unreported-loss warning", not warned(s, UNREPORTED))
    s = r.run("resume-longer-epochs", "train.py", r.base("b", 3) + ["--resume", str(ck / "checkpoint-1.pth.tar")],
              ORACLE)
    r.check(s, "resumed at epoch 2 only", s["epochs_trained"] == [2])
    r.check(s, "the loader state was loaded (no start-afresh warning)", not warned(s, "afresh"))
    r.check(s, "oracle reports continue: epochs 0, 1, 2", reports(loader_state(r.out / "b" / "last.pth.tar"))
            == [[0, 64], [1, 64], [2, 64]])
    s = r.run("resume-older-checkpoint", "train.py", r.base("c", 3) + ["--resume", str(ck / "checkpoint-0.pth.tar")],
              ORACLE)
    r.check(s, "resumed at epoch 1", s["epochs_trained"] == [1, 2])
    r.check(s, "checkpoint-0's own state was loaded (oracle epochs 0, 1, 2; not the last epoch's state)",
            reports(loader_state(r.out / "c" / "last.pth.tar")) == [[0, 64], [1, 64], [2, 64]])
    with torch.serialization.safe_globals([argparse.Namespace]):
        plain = torch.load(ck / "checkpoint-0.pth.tar", map_location="cpu", weights_only=True)
    del plain["args"].vitdata_loader                       # a checkpoint written before the switch to vitdata
    torch.save(plain, r.work / "no-loader-state.pth.tar")
    s = r.run("resume-checkpoint-without-loader-state", "train.py",
              r.base("d", 2) + ["--resume", str(r.work / "no-loader-state.pth.tar")], ORACLE)
    r.check(s, "warned that the loader starts epoch 1 afresh", warned(s, "holds no vitdata loader state")
            and warned(s, "starts epoch 1 afresh"))
    r.check(s, "trained epoch 1", s["epochs_trained"] == [1])


def steps_curriculum(r: Runner) -> None:
    """VITDATA_CURRICULUM from the environment, and its refusals in the user's own flags."""
    dyn = "img_size=64 patch_size=8 dynamic_img_size=True"
    cur = dict(ORACLE, VITDATA_CURRICULUM="efficienttrain")
    s = r.run("curriculum-efficienttrain", "train.py", r.base("e", 2, dyn), cur)
    st = loader_state(r.out / "e" / "last.pth.tar") or {}
    r.check(s, "the saved state runs the efficienttrain curriculum",
            st.get("fingerprint", {}).get("schedule", {}).get("name") == "efficienttrain")
    (r.work / "vitdata.yaml").write_text("vitdata_curriculum: efficienttrain\nvitdata_oracle: data-centric\n")
    s = r.run("curriculum-and-oracle-from-timm-config-file", "train.py", ["-c", str(r.work / "vitdata.yaml")]
              + r.base("e2", 1, dyn))
    st = loader_state(r.out / "e2" / "last.pth.tar") or {}
    r.check(s, "the keys of timm's --config file set the curriculum and the oracle",
            st.get("fingerprint", {}).get("schedule", {}).get("name") == "efficienttrain" and reports(st) == [[0, 64]])
    s = r.run("curriculum-resume-longer-epochs", "train.py", r.base("f", 4, dyn)
              + ["--resume", str(r.out / "e" / "last.pth.tar")], cur, expect_ok=False)
    r.check(s, "refused naming --epochs and the saved length", "--epochs" in (s["error"] or "")
            and "resume with --epochs 2" in (s["error"] or ""))
    s = r.run("curriculum-fixed-size-model", "train.py", r.base("g", 2, "img_size=64 patch_size=8 "
              "dynamic_img_size=False"), cur, expect_ok=False)
    r.check(s, "refused naming VITDATA_CURRICULUM and --model-kwargs dynamic_img_size=True",
            "[VITDATA_CURRICULUM, --model-kwargs dynamic_img_size=True]" in (s["error"] or ""))
    s = r.run("curriculum-merged-stages", "train.py", r.base("h", 2, "img_size=64 dynamic_img_size=True"), cur,
              expect_ok=False)
    r.check(s, "refused in timm's flags (--model-kwargs img_size / patch_size), no vitdata flag",
            "--model-kwargs patch_size=8" in (s["error"] or "") and "--patch-size" not in (s["error"] or ""))


def steps_options(r: Runner, teacher: str) -> None:
    """--val-split '', --model-dtype, WebDataset, distillation, refused and warned options."""
    s = r.run("no-validation-split", "train.py", r.base("i", 1) + ["--val-split", ""], ORACLE)
    r.check(s, "no evaluation ran", s["eval_lines"] == 0)
    s = r.run("model-dtype-bfloat16", "train.py", r.base("j", 1) + ["--model-dtype", "bfloat16"], ORACLE)
    r.check(s, "trained epoch 0", s["epochs_trained"] == [0])
    wds = ["--data-dir", str(r.data / "wds"), "--dataset", "wds/tiny", "--train-split", "train-{0000..0001}.tar",
           "--val-split", "val-0000.tar"]
    s = r.run("webdataset-shards", "train.py", r.base("k", 1) + wds, ORACLE)
    r.check(s, "trained and evaluated from shards", s["epochs_trained"] == [0] and s["eval_lines"] > 0)
    ctl = r.run("distillation-control", "train.py", r.base("l", 1), ORACLE)
    s = r.run("distillation", "train.py", r.base("m", 1) + ["--kd-model-name", teacher], ORACLE)
    r.check(s, "the oracle got the per-sample task losses", not warned(s, UNREPORTED)
            and reports(loader_state(r.out / "m" / "last.pth.tar")) == [[0, 64]])
    r.check(s, "the loss differs from the same run without a teacher (the distillation term is in it)",
            bool(s["train_loss"]) and s["train_loss"] != ctl["train_loss"])
    (r.work / "class_map.txt").write_text("\n".join(sorted(os.listdir(r.data / "train"))) + "\n")
    for name, extra, flag in (("refused-class-map", ["--class-map", str(r.work / "class_map.txt")], "--class-map"),
                              ("refused-naflex-loader", ["--naflex-loader"], "--naflex-loader"),
                              ("refused-train-img-sizes", ["--train-img-sizes", "48", "64"], "--train-img-sizes"),
                              ("refused-in-chans", ["--in-chans", "1"], "--in-chans")):
        s = r.run(name, "train.py", r.base("n", 1) + extra, expect_ok=False)
        r.check(s, f"refused naming {flag}", flag in (s["error"] or ""))
    s = r.run("warned-epoch-repeats", "train.py", r.base("o", 1) + ["--epoch-repeats", "2"])
    r.check(s, "warned naming epoch_repeats", warned(s, "epoch_repeats 2.0"))


def steps_criterion_left_out(r: Runner) -> None:
    s = r.run("criterion-line-left-out", "train_no_criterion.py", r.base("p", 1), ORACLE)
    r.check(s, "warned once, naming task.criterion", warned(s, UNREPORTED) and warned(s, "task.criterion"))


def steps_two_ranks(r: Runner) -> None:
    """timm's own DDP wrapping refuses CPU modules (device_ids=[cpu]); the same run of the unmodified train.py
    shows it is timm's, then a local one-line DDP change (not part of the README's diff) runs 2 gloo ranks."""
    s = r.run("two-ranks-patched", "train.py", r.base("q", 1), ORACLE, ranks=2, expect_ok=False)
    t = r.run("two-ranks-unmodified-timm", "train_unmodified.py", r.base("r", 1), ranks=2, expect_ok=False)
    same = "device_ids and output_device arguments only work" in (s["error"] or "") and \
        "device_ids and output_device arguments only work" in (t["error"] or "")
    r.check(s, "fails in timm's DDP wrapping on CPU, as the unmodified train.py does", same)
    s = r.run("two-ranks-ddp-on-cpu", "train_ddp_cpu.py", r.base("s", 2) + ["-b", "4"], ORACLE, ranks=2)
    st = loader_state(r.out / "s" / "last.pth.tar")
    r.check(s, "2 ranks trained 2 epochs; the oracle got all 64 samples of each epoch from both ranks",
            s["epochs_trained"] == [0, 1] and reports(st) == [[0, 64], [1, 64]])
    s = r.run("two-ranks-resume-longer-epochs", "train_ddp_cpu.py", r.base("t", 3) + [
        "-b", "4", "--resume", str(r.out / "s" / "last.pth.tar")], ORACLE, ranks=2)
    r.check(s, "both ranks resumed at epoch 2 from rank 0's state", s["epochs_trained"] == [2]
            and not warned(s, "afresh") and reports(loader_state(r.out / "t" / "last.pth.tar"))[-1] == [2, 64])


def prepare_scripts(timm: Path, work: Path, diff: str) -> dict:
    """train.py patched with ``git apply`` (and its two local variants), the unmodified copy, the apply record."""
    shutil.copy(timm / "train.py", work / "train.py")
    shutil.copy(timm / "train.py", work / "train_unmodified.py")
    (work / "timm_train.diff").write_text(diff)
    check = subprocess.run(["git", "apply", "--check", "-v", "timm_train.diff"], cwd=work, capture_output=True,
                           text=True)
    applied = check.returncode == 0 and subprocess.run(["git", "apply", "timm_train.diff"], cwd=work).returncode == 0
    if not applied:
        return {"applied": False, "git_apply": check.stderr.strip()}
    text = (work / "train.py").read_text()
    criterion = [ln for ln in text.splitlines(keepends=True) if "task.criterion = loader_train.criterion" in ln]
    (work / "train_no_criterion.py").write_text(text.replace(criterion[0], ""))
    (work / "train_ddp_cpu.py").write_text(text.replace(
        "task.prepare_distributed(device_ids=[device],",
        "task.prepare_distributed(device_ids=None if device.type == 'cpu' else [device],"))
    return {"applied": True, "git_apply": check.stderr.strip()}


def diff_facts(diff: str, timm: Path) -> dict:
    pinned = re.search(r"\b([0-9a-f]{40})\b", diff.splitlines()[0]).group(1)
    pre = re.search(r"^index ([0-9a-f]{40})\.\.", diff, flags=re.M).group(1)
    body = [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    head = git("rev-parse", "HEAD", cwd=timm, check=False) or None
    tags = {}
    for tag in sorted(git("tag", "--list", "v1.0.*", cwd=timm, check=False).split(), key=lambda t: [int(x) for x in
                                                                                                    t[1:].split(".")]):
        if [int(x) for x in tag[1:].split(".")] < [1, 0, 20]:
            continue
        blob = subprocess.run(["git", "show", f"{tag}:train.py"], cwd=timm, capture_output=True).stdout
        probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"dropin-probe-{os.getpid()}"
        shutil.rmtree(probe, ignore_errors=True)
        probe.mkdir()
        (probe / "train.py").write_bytes(blob)
        (probe / "p.diff").write_text(diff)
        probed = subprocess.run(["git", "apply", "--check", "p.diff"], cwd=probe, capture_output=True)
        tags[tag] = probed.returncode == 0
        shutil.rmtree(probe)
    return {"pinned_commit": pinned, "checkout_head": head, "train_py_blob": git("hash-object", str(timm / "train.py")),
            "pinned_train_py_blob": pre, "lines_added": sum(ln[0] == "+" for ln in body),
            "lines_removed": sum(ln[0] == "-" for ln in body), "applies_to_tags": tags}


def main(argv=None) -> int:
    import timm

    from vitdata.bench.record import write_record

    p = argparse.ArgumentParser(prog="benchmarks/dropin/check_timm.py", description=__doc__.splitlines()[0])
    p.add_argument("--timm", required=True, help="checkout of huggingface/pytorch-image-models")
    p.add_argument("--photos", default="/work/data/imagenette", help="ImageFolder with train/ and val/ of real photos")
    p.add_argument("--work", default=None, help="scratch folder (default: a new temporary one)")
    p.add_argument("--out", default=None, help="record path (default: benchmarks/results/cpu/<date>-dropin-timm.json)")
    a = p.parse_args(argv)
    import tempfile

    timm_dir, work = Path(a.timm).resolve(), Path(a.work or tempfile.mkdtemp(prefix="vitdata-dropin-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    diff = readme_diff()
    facts = diff_facts(diff, timm_dir)
    load = os.getloadavg()
    record = {"settings": {"timm_checkout": str(timm_dir), "timm_package": timm.__version__,
                           "timm_package_path": os.path.dirname(timm.__file__), "device": "cpu",
                           "load_average_at_start": [round(x, 2) for x in load]},
              "diff": facts, "steps": []}
    applied = prepare_scripts(timm_dir, work, diff)
    record["steps"].append({"name": "git-apply", "returncode": 0 if applied["applied"] else 1,
                            "output": applied["git_apply"],
                            "checks": {"git apply accepts the README's diff": applied["applied"],
                                       "the checkout's train.py is the pinned commit's blob":
                                           facts["train_py_blob"] == facts["pinned_train_py_blob"],
                                       "at most 15 changed lines":
                                           facts["lines_added"] + facts["lines_removed"] <= 15}})
    if applied["applied"]:
        record["settings"]["data"] = make_photos(Path(a.photos), work / "data")
        r = Runner(work, work / "data", work / "hf")
        teacher = make_teacher_cache(work / "hf")
        for group in (steps_train_and_resume, steps_curriculum, lambda rr: steps_options(rr, teacher),
                      steps_criterion_left_out, steps_two_ranks):
            group(r)
        record["steps"] += r.steps
    record["settings"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    failed = [s["name"] for s in record["steps"] if not all(s["checks"].values())]
    record["outcome"] = {"steps": len(record["steps"]), "failed": failed}
    path = write_record("dropin-timm", record, a.out)
    print(json.dumps({"record": path, "steps": len(record["steps"]), "failed": failed}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
