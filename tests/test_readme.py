"""Every ```python block of README.md runs as written, in order, in one namespace, with one documented
substitution: the UPPER-CASE assignment lines (DATA, EPOCHS, BATCH, MODEL) are replaced by a small
self-identifying dataset (train/ and val/), 2 epochs, batch 4 and vit_tiny_patch16_224, and the working
directory is a temporary one. The functions a block leaves to the reader (``evaluate(batch)``, ``log(error)``)
are bound to recorders. The timm diff block is the file benchmarks/dropin/check_timm.py applies, a unified diff
pinned to a timm commit, within its stated size."""
import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SUBSTITUTE = {"EPOCHS": "2", "BATCH": "4", "MODEL": '"vit_tiny_patch16_224"'}


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def substituted(code: str, data: str) -> str:
    values = dict(SUBSTITUTE, DATA=repr(data))

    def swap(m):
        return f"{m.group(1)} = {values[m.group(1)]}"

    return re.sub(rf"^({'|'.join(values)}) = [^\n#]*", swap, code, flags=re.M)


@pytest.mark.heavy
def test_every_python_block_of_the_readme_runs(tmp_path, monkeypatch):
    from vitdata.data import selfid

    selfid.write_imagefolder(str(tmp_path / "data" / "train"), 32, num_classes=4, size=32)
    selfid.write_imagefolder(str(tmp_path / "data" / "val"), 16, num_classes=4, size=32)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VITDATA_CACHE", str(tmp_path / "cache"))
    code = blocks("python")
    assert len(code) >= 2
    for name in ("DATA", "EPOCHS", "BATCH", "MODEL"):
        assert re.search(rf"^{name} = ", code[0], flags=re.M), f"README's first block lost its {name} line"
    evaluated, logged = [], []
    namespace: dict = {"__name__": "__readme__", "evaluate": evaluated.append, "log": logged.append}
    try:
        for i, block in enumerate(code):
            exec(compile(substituted(block, str(tmp_path / "data")), f"README.md python block {i + 1}", "exec"),
                 namespace)
    finally:
        for value in namespace.values():
            if type(value).__name__ == "Loader":
                value.close()
    assert os.path.exists(tmp_path / "vitdata-loader.json")
    assert evaluated and not logged                  # the eval loop ran; the small dataset has no bad file


def test_the_timm_diff_is_the_checked_file_a_unified_diff_with_line_numbers_pinned_to_a_timm_commit():
    """CI has no timm checkout: benchmarks/dropin/check_timm.py applies the diff to one; here the block must be
    that script's file, name its timm commit and the pinned train.py's blob, and parse as a unified diff whose
    hunk headers carry line numbers that agree with the hunks' own lines (what ``git apply`` checks first)."""
    (diff,) = blocks("diff")
    assert diff == (README.parent / "benchmarks" / "dropin" / "timm_train.diff").read_text()
    lines = diff.splitlines()
    assert re.fullmatch(r"timm's train.py at huggingface/pytorch-image-models commit [0-9a-f]{40} \(\d{4}-\d\d-\d\d\)",
                        lines[0]), lines[0]
    assert lines[1] == "diff --git a/train.py b/train.py"
    assert re.fullmatch(r"index [0-9a-f]{40}\.\.[0-9a-f]{40} 100755", lines[2])
    assert lines[3:5] == ["--- a/train.py", "+++ b/train.py"]
    hunks, i, shift = 0, 5, 0
    while i < len(lines):
        m = re.match(r"@@ -(\d+),(\d+) \+(\d+),(\d+) @@", lines[i])
        assert m, f"line {i + 1} is not a hunk header: {lines[i]!r}"
        old_start, old_n, new_start, new_n = map(int, m.groups())
        assert new_start == old_start + shift
        i, old, new = i + 1, 0, 0
        while i < len(lines) and not lines[i].startswith("@@"):
            assert lines[i][:1] in (" ", "+", "-"), f"line {i + 1}: {lines[i]!r}"
            old += lines[i][:1] in " -"
            new += lines[i][:1] in " +"
            i += 1
        assert (old, new) == (old_n, new_n), f"hunk {hunks + 1}: header says {old_n},{new_n}, body has {old},{new}"
        shift += new_n - old_n
        hunks += 1
    changed = [ln for ln in lines[5:] if ln[:1] in "+-"]
    assert hunks >= 1 and 0 < len(changed) <= 15, changed
