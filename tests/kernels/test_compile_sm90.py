"""The Triton kernels compile for an H100 (sm_90) on a machine without a GPU.

On CPU the kernels run under Triton's interpreter, which accepts programs the GPU compiler rejects and
says nothing about registers or shared memory. compile_worker.py compiles every kernel for sm_90 in one
clean subprocess (no TRITON_INTERPRET), in the configurations the launchers pick for real shapes (every
autotuner candidate included), through Triton's frontend, its TTIR / TTGIR / LLVM passes and its bundled
ptxas. These tests check what came out and print it (``pytest -s`` or ``-rP`` shows the table). Timing
still needs a GPU.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Compiles every kernel configuration in a child process: deselected by `make test-quick`.
pytestmark = pytest.mark.heavy

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
H100_MAX_SHARED_PER_BLOCK = 232448  # 227 KiB: the most shared memory one block may use on sm_90
# (case, BLOCK_H, precision) that spill on purpose: tf32x3 on a 512-row column has no spill-free config
# (kernels/lowpass.py, _GPU_CONFIGS); every other configuration must compile without spills.
KNOWN_SPILLS = {"512->320 f32->f32 NCHW"}


@pytest.fixture(scope="module")
def sm90(tmp_path_factory):
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton-cache"))  # compile for real, every run
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run([sys.executable, "-P", str(HERE / "compile_worker.py"), "--arch", "90"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if rows and "unavailable" in rows[0]:
        pytest.skip(f"this Triton build cannot compile for sm_90 without a device: {rows[0]['unavailable']}")
    assert rows, out.stderr[-4000:]
    return rows


def _table(rows) -> str:
    lines = [f"{'kernel':22} {'case':42} {'config':72} {'regs':>4} {'spill st/ld':>11} {'shared':>7} mma"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['kernel']:22} {r['case']:42} {r['config']:72} ERROR")
            continue
        lines.append(f"{r['kernel']:22} {r['case']:42} {r['config']:72} {r['regs']:4} "
                     f"{r['spill_stores']:5}/{r['spill_loads']:<5} {r['shared']:7} {','.join(r['mma']) or '-'}")
    return "\n".join(lines)


def test_every_kernel_configuration_compiles_to_ptx_and_cubin_for_sm90(sm90):
    print("\n" + _table(sm90))
    failed = [f"{r['case']} [{r['config']}]: {r['error']}" for r in sm90 if "error" in r]
    assert not failed, "\n\n".join(failed)
    for r in sm90:
        assert r["target"] == "cuda:90"
        assert r["ptx_bytes"] > 0 and r["cubin_bytes"] > 0, r
        assert r["regs"] is not None, f"no ptxas register report for {r['case']}"
    kernels = {r["kernel"] for r in sm90}
    assert kernels == {"_lowpass_crop_kernel", "_patch_erase_kernel"}


def test_every_autotuner_candidate_of_a_shape_was_compiled(sm90):
    import importlib

    lp = importlib.import_module("vitdata.kernels.lowpass")
    by_case = {}
    for r in sm90:
        if r["kernel"] == "_lowpass_crop_kernel":
            by_case.setdefault(r["case"], set()).add(r["config"])
    for case, configs in by_case.items():
        block_h = int(next(c for c in configs).split("BLOCK_H=")[1].split()[0])
        precision = "tf32" if "->bf16" in case else "tf32x3"
        assert len(configs) == len(lp._gpu_configs(precision, block_h)), case


def test_every_configuration_fits_in_the_shared_memory_of_an_h100_block(sm90):
    # Triton checks this only when loading the kernel on a device: a config over the limit fails at launch.
    over = [f"{r['case']} [{r['config']}]: {r['shared']} bytes" for r in sm90
            if "error" not in r and r["shared"] > H100_MAX_SHARED_PER_BLOCK]
    assert not over, "\n".join(over)


def test_no_configuration_spills_registers_except_the_known_512_row_tf32x3_tile(sm90):
    spills = [f"{r['case']} [{r['config']}]: {r['spill_stores']} bytes stored, {r['spill_loads']} loaded"
              for r in sm90 if "error" not in r and (r["spill_stores"] or r["spill_loads"])]
    assert all(s.split(" [")[0] in KNOWN_SPILLS for s in spills), "\n".join(spills)


def test_the_candidates_of_one_autotune_list_compile_to_one_mma_version(sm90):
    """mma.sync and wgmma accumulate a tile in different orders: a list mixing them would let the
    autotuner's pick change the output bits (test_lowpass.py demands identical bits on a GPU)."""
    by_case = {}
    for r in sm90:
        if r["kernel"] == "_lowpass_crop_kernel" and "error" not in r:
            by_case.setdefault(r["case"], {})[r["config"]] = tuple(r["mma"])
    mixed = {case: cfgs for case, cfgs in by_case.items() if len(set(cfgs.values())) > 1}
    assert by_case and not mixed, mixed


def test_inputs_32_px_high_and_below_are_compiled_and_use_mma_sync_in_both_stages(sm90):
    """BLOCK_H 16 and 32 give stage 1 a tile shorter than wgmma's 64 rows: the older mma.sync path, which
    the larger shapes use in stage 2 only, compiled here for stage 1 too."""
    small = {}
    for r in sm90:
        if r["kernel"] == "_lowpass_crop_kernel":
            block_h = int(r["config"].split("BLOCK_H=")[1].split()[0])
            if block_h <= 32:
                small.setdefault(block_h, []).append(r)
    assert set(small) == {16, 32}, sorted(small)
    precisions = {"tf32" if "->bf16" in r["case"] else "tf32x3" for rows in small.values() for r in rows}
    assert precisions == {"tf32", "tf32x3"}
    for rows in small.values():
        for r in rows:
            assert "error" not in r and r["mma"] == ["2"], (r["case"], r["config"], r.get("mma"), r.get("error"))
