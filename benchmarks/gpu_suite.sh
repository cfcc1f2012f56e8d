#!/usr/bin/env bash
# Harvest every GPU figure of vitdata in one sitting, on an H100/H200 host with ~16 cores and no network.
#
#   benchmarks/gpu_suite.sh OUTDIR [--dry-run] [--data PHOTOS] [--work DIR]
#   benchmarks/gpu_suite.sh --plan        (the steps and their budgets; runs nothing)
#
# OUTDIR is the folder that comes back from the GPU host (a transfer returns at most 8 files and 64 MiB). The
# suite leaves two files there, repacked after every step: gpu-suite.tar.gz (logs/NN-name.log, records/ with
# the benchmark records and the pytest results, summary.tsv, commands.txt, env.txt, MANIFEST.txt) and a copy of
# summary.tsv. Everything else (the photos unpacked from a tar, scratch files) goes to WORK: --work DIR,
# $VITDATA_SUITE_WORK, else a new folder under ${TMPDIR:-/tmp}; never under OUTDIR.
#
# Steps, in order of value, each under its own `timeout` (budget in seconds; whole run <= 400 s, so that a
# rerun also fits in 15 minutes of device time):
#   1 env        [20]  versions, pytest plugins, CUDA, nvidia-smi, /dev/shm size (says when too small), DALI
#   2 device     [30]  a train loader with device "cuda" runs DALI on GPU 0, 2 source workers started with spawn
#   3 pytest-gpu [100] the GPU tests (tests/kernels/test_lowpass.py, test_patch_erase.py, tests/loader/test_gpu.py):
#                      -n 8 with pytest-xdist, 40 s per test with pytest-timeout, -v lines in the log as each test
#                      ends, records/pytest-gpu.jsonl (one JSON line per test, flushed as it ends: survives a kill)
#                      and records/pytest-gpu.xml (junit, written when the session ends)
#   4 kernels    [45]  vitdata bench kernels
#   5 loader     [80]  vitdata bench loader on the photos (PHOTOS: --data, $VITDATA_PHOTOS, else
#                      ../shared/data/imagenet-samples, shared/data/imagenet-samples or .gpudata/imagenet-samples;
#                      a .tar/.tar.xz of the folder is unpacked into WORK/photos)
#   6 step       [60]  vitdata bench step (ViT-S/16, 224 px, batch 256, bf16)
#   7 f3-memory  [50]  tests/reliability/test_gpu_memory.py (VITDATA_F3_STEPS, default 1000 here), 45 s test timeout
# Steps 2, 5, 6 and 7 need DALI: when step 1 finds none they are skipped with a line saying so (summary rc
# "skip"), and step 3 leaves out tests/loader/test_gpu.py; steps 3 and 7 are skipped likewise without pytest.
# Each step writes its log as it runs and a line to summary.tsv when it ends (step, exit status, seconds,
# budget, mode; 124 = cut by its timeout).
#
# --dry-run (CPU, CI): every step runs its real body where a CPU can: step 1 as is, step 2 on the CPU (same
# spawn workers), steps 3 and 7 the real pytest command (the GPU tests skip; test_gpu_memory.py's CPU test of
# the F3 plan runs), steps 4-6 the real command line with small sizes appended (argparse keeps the last
# value). Each gets 300 s in place of its budget (CI machines are shared). commands.txt lists what a real
# run executes. Exit status: 0 when every step passed, else 1; 2 for a bad command line.
set -u

# name:budget:needs-DALI, in order; the budgets and the total are the plan (--plan prints it)
STEPS=(01:env:20:0 02:device:30:1 03:pytest-gpu:100:0 04:kernels:45:0 05:loader:80:1 06:step:60:1 07:f3-memory:50:1)
TOTAL_BUDGET=400      # seconds, start to last pack
DRY_STEP_LIMIT=300      # --dry-run: a hang guard per step (a step is 5-15 s of CPU; CI machines may be loaded 10x)
GPU_TEST_FILES=(tests/kernels/test_lowpass.py tests/kernels/test_patch_erase.py tests/loader/test_gpu.py)
GPU_TEST_TIMEOUT=40   # per test, pytest-timeout
F3_TEST_TIMEOUT=45

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
plan() {
  local s nn name budget dali sum=0
  printf 'step\tbudget_s\tneeds_dali\n'
  for s in "${STEPS[@]}"; do
    IFS=: read -r nn name budget dali <<< "$s"
    printf '%s-%s\t%s\t%s\n' "$nn" "$name" "$budget" "$dali"
    sum=$((sum + budget))
  done
  printf 'steps\t%s\n' "$sum"
  printf 'total\t%s\n' "$TOTAL_BUDGET"
}
OUT="" DRY=0 DATA="${VITDATA_PHOTOS:-}" WORK="${VITDATA_SUITE_WORK:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --plan) plan; exit 0 ;;
    --data) DATA="$2"; shift ;;
    --data=*) DATA="${1#--data=}" ;;
    --work) WORK="$2"; shift ;;
    --work=*) WORK="${1#--work=}" ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_suite: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) if [ -z "$OUT" ]; then OUT="$1"; else echo "gpu_suite: one OUTDIR only" >&2; exit 2; fi ;;
  esac
  shift
done
[ -n "$OUT" ] || { usage >&2; exit 2; }

# paths given on the command line are the caller's; the defaults below are the checkout's
OUT="$(realpath -m "$OUT")"
[ -n "$DATA" ] && DATA="$(realpath -m "$DATA")"
[ -n "$WORK" ] || WORK="$(mktemp -d "${TMPDIR:-/tmp}/vitdata-gpu-suite.XXXXXX")" || exit 2
WORK="$(realpath -m "$WORK")"
case "$WORK/" in "$OUT"/*) echo "gpu_suite: WORK ($WORK) must not be inside OUTDIR ($OUT)" >&2; exit 2 ;; esac
mkdir -p "$OUT" "$WORK/logs" "$WORK/records" || exit 2
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" || exit 2
PY="${PYTHON:-python3}"
START=$(date +%s)
FAILED=0
export PYTHONUNBUFFERED=1
MODE=$([ $DRY = 1 ] && echo dry-run || echo run)
printf 'step\trc\tseconds\tbudget\tmode\n' > "$WORK/summary.tsv"

pack() { "$PY" benchmarks/gpu_suite.py pack "$WORK" "$OUT" > /dev/null || echo "gpu_suite: packing failed" >&2; }
trap pack EXIT
budget_of() {
  local s nn name budget dali
  for s in "${STEPS[@]}"; do
    IFS=: read -r nn name budget dali <<< "$s"
    [ "$nn" = "$1" ] && { echo "$budget"; return; }
  done
}

# run_step NN NAME CMD...: the command under `timeout`, cut to what is left of the total budget; then pack.
run_step() {
  local nn="$1" name="$2"; shift 2
  local log="$WORK/logs/$nn-$name.log" budget left t0 rc
  budget=$(budget_of "$nn")
  left=$(( TOTAL_BUDGET - 5 - ($(date +%s) - START) ))   # 5 s for the last pack
  if [ "$DRY" = 1 ]; then budget=$DRY_STEP_LIMIT; left=$DRY_STEP_LIMIT; fi
  [ "$budget" -gt "$left" ] && budget=$left
  echo "== $nn $name [${budget}s]: $*" > "$log"
  echo "== $nn $name [${budget}s]: $*"
  t0=$(date +%s)
  if [ "$budget" -le 5 ]; then
    echo "skipped: the suite's ${TOTAL_BUDGET}s are spent" | tee -a "$log"; rc=125
  else
    timeout -k 10 "$budget" "$@" >> "$log" 2>&1
    rc=$?
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$nn-$name" "$rc" "$(( $(date +%s) - t0 ))" "$budget" "$MODE" >> "$WORK/summary.tsv"
  [ "$rc" = 0 ] || { FAILED=1; echo "   -> exit $rc (see logs/$nn-$name.log)"; }
  tail -n 3 "$log" | sed 's/^/   /'
  pack
}

# skip_step NN NAME REASON: a log and a summary line saying why the step did not run.
skip_step() {
  echo "== $1 $2: skipped: $3" | tee "$WORK/logs/$1-$2.log"
  printf '%s\tskip\t0\t%s\t%s\n' "$1-$2" "$(budget_of "$1")" "$MODE" >> "$WORK/summary.tsv"
}

# The photos for the loader and step benchmarks; a tar is unpacked into WORK/photos (never into OUTDIR), and
# only when the steps that read it can run.
find_photos() {
  local d
  if [ -z "$DATA" ]; then
    for d in ../shared/data/imagenet-samples shared/data/imagenet-samples .gpudata/imagenet-samples \
             .gpudata/imagenet-samples.tar.xz; do
      [ -e "$d" ] && { DATA="$d"; break; }
    done
  fi
  case "$DATA" in
    *.tar|*.tar.xz|*.txz)
      [ "$DALI" = 1 ] && mkdir -p "$WORK/photos" && tar -xf "$DATA" -C "$WORK/photos" \
        && DATA="$(find "$WORK/photos" -mindepth 1 -maxdepth 1 -type d | head -n 1)" ;;
  esac
}

# ---- step 1 decides what can run ------------------------------------------------------------------------
echo "vitdata gpu_suite: OUTDIR $OUT, WORK $WORK, python $PY$([ $DRY = 1 ] && echo ', DRY RUN')"
run_step 01 env "$PY" benchmarks/gpu_suite.py env "$WORK/env.txt" $([ $DRY = 1 ] && echo --dry-run)
DALI=0 PYTEST=0 XDIST=0 PYTEST_TIMEOUT=0 CPUS=1
if [ -f "$WORK/env.txt" ]; then
  . "$WORK/env.txt"
else   # step 1 did not finish: ask directly rather than skip what may work
  timeout 30 "$PY" -c "import nvidia.dali" 2>/dev/null && DALI=1
  timeout 10 "$PY" -c "import pytest" 2>/dev/null && PYTEST=1
  timeout 10 "$PY" -c "import xdist" 2>/dev/null && XDIST=1
  timeout 10 "$PY" -c "import pytest_timeout" 2>/dev/null && PYTEST_TIMEOUT=1
fi
find_photos

# ---- the commands --------------------------------------------------------------------------------------
F3_STEPS="${VITDATA_F3_STEPS:-1000}"
WORKERS=$(( CPUS < 8 ? CPUS : 8 ))
# -o addopts replaces pytest.ini's, whose --timeout needs pytest-timeout (absent on a bare host: every
# pytest call would stop at "unrecognized arguments"); our own per-test timeout is added where it exists.
PYTEST_CMD=("$PY" -m pytest -o "addopts=--import-mode=importlib -ra" -p no:cacheprovider -p result_lines -v)
XDIST_ARGS=(); [ "$XDIST" = 1 ] && XDIST_ARGS=(-n "$WORKERS")
T_GPU=(); T_F3=()
[ "$PYTEST_TIMEOUT" = 1 ] && { T_GPU=(--timeout="$GPU_TEST_TIMEOUT"); T_F3=(--timeout="$F3_TEST_TIMEOUT"); }
FILES=("${GPU_TEST_FILES[@]}")
[ "$DALI" = 1 ] || FILES=(tests/kernels/test_lowpass.py tests/kernels/test_patch_erase.py)
BENCH=("$PY" -m vitdata bench)
CMD_DEVICE=("$PY" benchmarks/gpu_suite.py device)
CMD_PYTEST=("${PYTEST_CMD[@]}" -m gpu "${XDIST_ARGS[@]}" "${T_GPU[@]}" --result-lines "$WORK/records/pytest-gpu.jsonl"
            --junitxml="$WORK/records/pytest-gpu.xml" "${FILES[@]}")
CMD_KERNELS=("${BENCH[@]}" kernels --json "$WORK/records/")
CMD_LOADER=("${BENCH[@]}" loader --data "${DATA:-MISSING-PHOTOS}" --size 224 --batch-size 256 --warmup 3 --windows 4
            --steps 6 --json "$WORK/records/" --plot "$WORK/records/loader.png")
CMD_STEP=("${BENCH[@]}" step --data "${DATA:-MISSING-PHOTOS}" --model vit_small_patch16_224 --size 224
          --batch-size 256 --warmup 5 --steps 30 --json "$WORK/records/")
CMD_F3=(env VITDATA_F3_STEPS="$F3_STEPS" "${PYTEST_CMD[@]}" -s "${T_F3[@]}"
        --result-lines "$WORK/records/pytest-f3.jsonl"
        --junitxml="$WORK/records/pytest-f3.xml" tests/reliability/test_gpu_memory.py)
for c in CMD_DEVICE CMD_PYTEST CMD_KERNELS CMD_LOADER CMD_STEP CMD_F3; do
  eval "printf '%q ' \"\${$c[@]}\"" >> "$WORK/commands.txt"; echo >> "$WORK/commands.txt"
done
# --dry-run: the same commands with small sizes appended (argparse keeps an option's last value)
SMALL_LOADER=(--size 32 --batch-size 4 --warmup 1 --windows 2 --steps 2 --workers 1 --threads 1)
SMALL_KERNELS=(--device cpu --batch 2 --size 32 --crop 24 --repeats 1 --iters 1 --warmup 0)
SMALL_STEP=(--model vit_tiny_patch16_224 --size 32 --batch-size 4 --warmup 1 --steps 2 --workers 1 --threads 1)
need_dali() { [ "$DALI" = 1 ] || { skip_step "$1" "$2" "step 1 found no importable DALI"; return 1; }; }
need_pytest() { [ "$PYTEST" = 1 ] || { skip_step "$1" "$2" "step 1 found no importable pytest"; return 1; }; }

# ---- steps 2-7 -----------------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
  need_dali 02 device && run_step 02 device "${CMD_DEVICE[@]}" --dry-run --start-timeout 60
  need_pytest 03 pytest-gpu && run_step 03 pytest-gpu "${CMD_PYTEST[@]}"
  run_step 04 kernels "${CMD_KERNELS[@]}" "${SMALL_KERNELS[@]}"
  need_dali 05 loader && run_step 05 loader "${CMD_LOADER[@]}" "${SMALL_LOADER[@]}"
  need_dali 06 step && run_step 06 step "${CMD_STEP[@]}" "${SMALL_STEP[@]}"
else
  need_dali 02 device && run_step 02 device "${CMD_DEVICE[@]}"
  need_pytest 03 pytest-gpu && run_step 03 pytest-gpu "${CMD_PYTEST[@]}"
  run_step 04 kernels "${CMD_KERNELS[@]}"
  need_dali 05 loader && run_step 05 loader "${CMD_LOADER[@]}"
  need_dali 06 step && run_step 06 step "${CMD_STEP[@]}"
fi
need_dali 07 f3-memory && need_pytest 07 f3-memory && run_step 07 f3-memory "${CMD_F3[@]}"
[ -e "${DATA:-MISSING-PHOTOS}" ] || echo "note: no photos found (${DATA:-none}): steps 5 and 6 need --data PATH"
echo "done in $(( $(date +%s) - START ))s; summary:"
column -t -s "$(printf '\t')" "$WORK/summary.tsv" 2>/dev/null || cat "$WORK/summary.tsv"
pack
trap - EXIT
echo "results: $OUT/gpu-suite.tar.gz (and $OUT/summary.tsv); working files: $WORK"
exit $FAILED
