#!/usr/bin/env bash
# Harvest every GPU figure of vitdata in one sitting, on an H100/H200 host with ~16 cores and no network.
#
#   benchmarks/gpu_suite.sh OUTDIR [--dry-run] [--data PHOTOS]
#
# Steps, in order of value, each under its own `timeout` (seconds in brackets; the whole run <= 540 s):
#   1 env        [30]  versions (python, torch, triton, timm, DALI), nvidia-smi, DALI importable
#   2 device     [45]  a train loader built with device "cuda" runs DALI on GPU 0 (loader.dali_device_id == 0)
#   3 pytest-gpu [100] pytest -m gpu (-n auto when pytest-xdist is importable), F3 left to step 7
#   4 kernels    [60]  vitdata bench kernels
#   5 loader     [130] vitdata bench loader on the photos (PHOTOS: --data, $VITDATA_PHOTOS, else
#                      ../shared/data/imagenet-samples, shared/data/imagenet-samples or .gpudata/imagenet-samples;
#                      a .tar/.tar.xz of the folder is unpacked into OUTDIR/work first)
#   6 step       [80]  vitdata bench step (ViT-S/16, 224 px, batch 256, bf16)
#   7 f3-memory  [90]  tests/reliability/test_gpu_memory.py (VITDATA_F3_STEPS, default 1000 here)
# Each step writes OUTDIR/NN-name.log as it runs and a line to OUTDIR/summary.tsv when it ends (name, exit
# status, seconds, budget; 124 = cut by its timeout); records go to OUTDIR/records/. A run cut off from
# outside still leaves every finished step's log, record and summary line.
#
# --dry-run (CPU, CI): runs step 1, and for every other step prints its command line and checks that its
# entry point exists and parses (`--help`, pytest collection of the named files, the device check's config),
# without running the heavy part (each check gets 120 s: CI machines are shared). Exit status: 0 when every step passed (or, dry, every check did), else 1.
set -u

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; }
OUT="" DRY=0 DATA="${VITDATA_PHOTOS:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --data) DATA="$2"; shift ;;
    --data=*) DATA="${1#--data=}" ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_suite: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) if [ -z "$OUT" ]; then OUT="$1"; else echo "gpu_suite: one OUTDIR only" >&2; exit 2; fi ;;
  esac
  shift
done
[ -n "$OUT" ] || { usage >&2; exit 2; }

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" || exit 2
mkdir -p "$OUT/records" "$OUT/work" || exit 2
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python3}"
TOTAL_BUDGET=540
START=$(date +%s)
FAILED=0
export PYTHONUNBUFFERED=1
printf 'step\trc\tseconds\tbudget\tmode\n' > "$OUT/summary.tsv"

# run_step NN NAME BUDGET CMD...: the command under `timeout`, cut to what is left of the total budget.
run_step() {
  local nn="$1" name="$2" budget="$3"; shift 3
  local log="$OUT/$nn-$name.log" left t0 rc
  left=$(( TOTAL_BUDGET - ($(date +%s) - START) ))
  if [ "$DRY" = 1 ]; then budget=120; left=120; fi
  [ "$budget" -gt "$left" ] && budget=$left
  echo "== $nn $name [${budget}s]: $*" > "$log"
  echo "== $nn $name [${budget}s]: $*"
  if [ "$budget" -le 5 ]; then
    echo "skipped: the suite's ${TOTAL_BUDGET}s are spent" | tee -a "$log"; rc=125; t0=$(date +%s)
  else
    t0=$(date +%s)
    timeout -k 10 "$budget" "$@" >> "$log" 2>&1
    rc=$?
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$nn-$name" "$rc" "$(( $(date +%s) - t0 ))" "$budget" \
    "$([ $DRY = 1 ] && echo dry-run || echo run)" >> "$OUT/summary.tsv"
  [ "$rc" = 0 ] || { FAILED=1; echo "   -> exit $rc (see $log)"; }
  tail -n 3 "$log" | sed 's/^/   /'
}

# The photos for bench loader.
if [ -z "$DATA" ]; then
  for d in ../shared/data/imagenet-samples shared/data/imagenet-samples .gpudata/imagenet-samples \
           .gpudata/imagenet-samples.tar.xz; do
    [ -e "$d" ] && { DATA="$d"; break; }
  done
fi
case "$DATA" in
  *.tar|*.tar.xz|*.txz)
    if [ "$DRY" = 0 ]; then
      tar -xf "$DATA" -C "$OUT/work" && DATA="$(find "$OUT/work" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
    fi ;;
esac

XDIST=""
$PY -c "import xdist" 2>/dev/null && XDIST="-n auto"
F3_STEPS="${VITDATA_F3_STEPS:-1000}"

# The device-resolution check: device "cuda" (no index) must give DALI device 0, and the batch arrives there.
cat > "$OUT/device_check.py" <<'EOF'
import sys
import tempfile

from vitdata import LoaderConfig, create_loader
from vitdata.data import selfid
from vitdata.loader.loader import Loader
from vitdata.loader.config import OutputConfig

assert isinstance(getattr(Loader, "dali_device_id", None), property), "Loader.dali_device_id is missing"
root = tempfile.mkdtemp(prefix="vitdata-devcheck-")
cfg = LoaderConfig(data=root, batch_size=8, image_size=64, backend="dali", output=OutputConfig(device="cuda"))
if "--dry-run" in sys.argv:
    print(f"dry run: config built (device {cfg.output.device!r}); the loader is not created without a GPU")
    sys.exit(0)
selfid.write_imagefolder(root, 64, num_classes=4, size=64)
loader = create_loader(cfg)
print("backend", loader.backend_name, "dali_device_id", loader.dali_device_id)
assert loader.dali_device_id == 0, f"device 'cuda' gave DALI device_id {loader.dali_device_id!r}, expected 0"
loader.set_epoch(0)
batch = next(iter(loader))
assert batch.images.device.type == "cuda", batch.images.device
loader.close()
print("ok: DALI ran on GPU 0 and the batch arrived on", batch.images.device)
EOF

cat > "$OUT/env_check.sh" <<'EOF'
PY="$1"
"$PY" - <<'PYEOF'
import importlib, platform
print("python", platform.python_version())
for m in ("torch", "triton", "timm", "numpy", "nvidia.dali", "xdist"):
    try:
        print(m, getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as e:
        print(m, "NOT IMPORTABLE:", type(e).__name__, e)
import os, torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "devices", torch.cuda.device_count(), "usable cpus", len(os.sched_getaffinity(0)))
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
PYEOF
command -v nvidia-smi >/dev/null && nvidia-smi || echo "nvidia-smi: not found"
"$PY" -c "import nvidia.dali" && echo "DALI importable" || { echo "DALI NOT importable"; exit 1; }
EOF

BENCH=("$PY" -m vitdata bench)
CMD_DEVICE=("$PY" "$OUT/device_check.py")
CMD_PYTEST=("$PY" -m pytest -m gpu $XDIST -q -p no:cacheprovider --junitxml="$OUT/records/pytest-gpu.xml"
            --ignore=tests/reliability/test_gpu_memory.py tests)
CMD_KERNELS=("${BENCH[@]}" kernels --json "$OUT/records/")
CMD_LOADER=("${BENCH[@]}" loader --data "${DATA:-MISSING-PHOTOS}" --size 224 --batch-size 256 --warmup 3 --windows 5
            --steps 8 --json "$OUT/records/" --plot "$OUT/records/loader.png")
CMD_STEP=("${BENCH[@]}" step --data "${DATA:-MISSING-PHOTOS}" --model vit_small_patch16_224 --size 224
          --batch-size 256 --warmup 5 --steps 30 --json "$OUT/records/")
CMD_F3=(env VITDATA_F3_STEPS="$F3_STEPS" "$PY" -m pytest -q -p no:cacheprovider
        --junitxml="$OUT/records/pytest-f3.xml" tests/reliability/test_gpu_memory.py)

echo "vitdata gpu_suite: OUTDIR $OUT, photos ${DATA:-<none found>}, python $PY$([ $DRY = 1 ] && echo ', DRY RUN')"
run_step 01 env 30 bash "$OUT/env_check.sh" "$PY"
if [ "$DRY" = 1 ]; then
  # Each check: the entry point exists and parses; the heavy part does not run.
  run_step 02 device 45 "${CMD_DEVICE[@]}" --dry-run
  run_step 03 pytest-gpu 100 "$PY" -m pytest --collect-only -q -p no:cacheprovider -m gpu \
    --ignore=tests/reliability/test_gpu_memory.py tests
  run_step 04 kernels 60 "${CMD_KERNELS[@]}" --help
  run_step 05 loader 60 bash -c '[ -e "$1" ] || { echo "no photos at $1"; exit 1; }; shift; "$@" --help' _ \
    "${DATA:-MISSING-PHOTOS}" "${CMD_LOADER[@]}"
  run_step 06 step 60 "${CMD_STEP[@]}" --help
  run_step 07 f3-memory 60 "$PY" -m pytest --collect-only -q -p no:cacheprovider tests/reliability/test_gpu_memory.py
  for c in CMD_DEVICE CMD_PYTEST CMD_KERNELS CMD_LOADER CMD_STEP CMD_F3; do
    eval "printf '%q ' \"\${$c[@]}\"" >> "$OUT/commands.txt"; echo >> "$OUT/commands.txt"
  done
  echo "commands that a real run executes: $OUT/commands.txt"
else
  run_step 02 device 45 "${CMD_DEVICE[@]}"
  run_step 03 pytest-gpu 100 "${CMD_PYTEST[@]}"
  run_step 04 kernels 60 "${CMD_KERNELS[@]}"
  run_step 05 loader 130 "${CMD_LOADER[@]}"
  run_step 06 step 80 "${CMD_STEP[@]}"
  run_step 07 f3-memory 90 "${CMD_F3[@]}"
fi
echo "done in $(( $(date +%s) - START ))s; summary:"
column -t -s "$(printf '\t')" "$OUT/summary.tsv" 2>/dev/null || cat "$OUT/summary.tsv"
exit $FAILED
