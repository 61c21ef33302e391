"""Peer libraries' losses, for the benchmarks and the tests that compare with them.

lightly's loss modules need only torch, but its package imports torchvision, which has no
build for every torch: then a loss module is loaded on its own, under stand-in packages,
with a stand-in for the one torchvision name that lightly's modules import.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types


def has_lightly() -> bool:
    return importlib.util.find_spec("lightly") is not None


def lightly_loss(module: str, name: str) -> type:
    """The class lightly.loss.<module>.<name> (e.g. "dcl_loss", "DCLLoss"); ImportError when
    lightly is not installed."""
    try:
        return getattr(importlib.import_module(f"lightly.loss.{module}"), name)
    except ImportError:
        pass
    spec = importlib.machinery.PathFinder.find_spec("lightly")  # not the half-imported package
    if spec is None:
        raise ImportError("lightly is not installed")
    root = spec.submodule_search_locations[0]
    saved = {n: m for n, m in sys.modules.items() if n.startswith(("lightly", "torchvision"))}
    try:
        packages = ("lightly", "lightly.loss", "lightly.models", "lightly.models.modules", "lightly.utils")
        for package in packages:
            stand_in = types.ModuleType(package)
            stand_in.__path__ = [f"{root}/{package.partition('.')[2].replace('.', '/')}".rstrip("/")]
            sys.modules[package] = stand_in
        if importlib.machinery.PathFinder.find_spec("torchvision") is None:
            ops_stub = types.ModuleType("torchvision.ops")
            ops_stub.StochasticDepth = object
            sys.modules["torchvision"] = types.ModuleType("torchvision")
            sys.modules["torchvision.ops"] = ops_stub
        return getattr(importlib.import_module(f"lightly.loss.{module}"), name)
    finally:
        for n in [n for n in sys.modules if n.startswith(("lightly", "torchvision"))]:
            del sys.modules[n]
        sys.modules.update(saved)
