"""Every ```python block of README.md runs as written, in order, in one namespace, with one documented
substitution: the UPPER-CASE assignment lines (DATA, EPOCHS, BATCH, MODEL) are replaced by a small
self-identifying dataset (train/ and val/), 2 epochs, batch 4 and vit_tiny_patch16_224, and the working
directory is a temporary one. The functions a block leaves to the reader (``evaluate(batch)``, ``log(error)``)
are bound to recorders. The timm diff block stays within its stated size."""
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


def test_the_timm_diff_changes_at_most_15_lines():
    (diff,) = blocks("diff")
    changed = [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert 0 < len(changed) <= 15, changed
