"""Curriculum kernels (Triton on CUDA, PyTorch reference on CPU). Installed as vitdata.kernels."""
