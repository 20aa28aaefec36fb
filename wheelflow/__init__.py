"""wheelflow: release orchestration for CUDA-accelerated Python packages, built on Prefect."""

__version__ = "0.1.0"
