"""Skip markers for optional hardware and packages."""

import importlib.util

import pytest
import torch

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def requires_module(name: str):
    return pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=f"needs the optional package {name!r}")
