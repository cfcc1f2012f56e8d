"""vitdata: a GPU input pipeline for Vision Transformer training (DALI graphs, Triton kernels, curriculum).

`pipelines/` and `kernels/` live at the top of the repository but install as `vitdata.pipelines` and
`vitdata.kernels`; no generic top-level package lands in site-packages.
"""
import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "vitdata" / "version.py").read_text(), re.M).group(1)

setup(
    name="vitdata",
    version=VERSION,
    description="GPU data pipeline for ViT training: DALI decode/augment, Triton curriculum kernels, difficulty oracle",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["vitdata", "vitdata.data", "vitdata.curriculum", "vitdata.oracle", "vitdata.loader", "vitdata.loader.backends",
              "vitdata.train", "vitdata.bench", "vitdata.pipelines", "vitdata.kernels"],
    package_dir={"vitdata": "vitdata", "vitdata.pipelines": "pipelines", "vitdata.kernels": "kernels"},
    install_requires=[
        "torch>=2.4",
        "numpy>=1.24",
        "pillow>=10",
        "timm>=1.0",
        "triton>=3.0; platform_system == 'Linux'",
        "nvidia-dali-cuda130>=2.0; platform_system == 'Linux' and platform_machine == 'x86_64'",
        "safetensors>=0.4",
    ],
    extras_require={
        # DALI built against CUDA 12 instead of 13 (install with: pip install "vitdata[cuda12]").
        "cuda12": ["nvidia-dali-cuda120>=2.0"],
        # Optional (vitdata.optional): progress bar, the report's PNG plots, YAML configs. vitdata runs
        # without them (plain log lines, summary.md only, JSON configs); `make run` / `make test` install them.
        "report": ["tqdm>=4.60", "pyyaml>=6", "matplotlib>=3.7"],
        "test": ["pytest>=8", "pytest-timeout>=2.2", "psutil>=5.9"],
    },
    entry_points={"console_scripts": ["vitdata=vitdata.cli:main"]},
)
