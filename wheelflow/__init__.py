"""wheelflow: release orchestration for CUDA-accelerated Python packages, built on Prefect."""

from pathlib import Path as _Path

__version__ = "0.1.0"

# Imported from a checkout (a folder on sys.path holding this repository, e.g. `python -c ...` or a
# script run in it), this package lacks the subpackages pyproject.toml maps from the top level (flows/,
# tasks/, deployments/ → wheelflow.flows, ...): look for them beside it too, so that the checkout's
# wheelflow/ never shadows an installed copy with a package that cannot run a flow.
_here = _Path(__file__).resolve().parent
if not (_here / "flows").is_dir() and (_here.parent / "flows" / "__init__.py").is_file():
    __path__.append(str(_here.parent))  # noqa: F821 - a package's __path__ exists at import
del _Path, _here
