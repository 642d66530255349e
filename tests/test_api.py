"""The small public API (``corrflow.propagate``, ``corrflow.load_encoder``): its examples run (the
docstrings' doctests and the README's snippet), its masks are the ones ``tools/propagate.py``
writes, bad input gets a clear error, and ``import corrflow`` stays cheap."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import corrflow
import corrflow.api
from corrflow.models.checkpoint import encoder_payload
from corrflow.models.encoder import corrflow_encoder
from corrflow.propagation.run import propagate as propagate_run
from corrflow.utils.io import read_indexed_png
from tests.helpers.vos_synthetic import moving_objects, write_davis_tree
from tests.test_tools_propagate import compose_cfg

REPO = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_docstring_examples_run() -> None:
    for module in (corrflow, corrflow.api):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
        assert result.failed == 0, f"{module.__name__}: {result.failed} of {result.attempted} doctest examples failed"
    assert doctest.testmod(corrflow.api).attempted >= 8


def test_the_readme_snippet_runs_and_is_the_one_of_the_propagation_page() -> None:
    (snippet,) = [b for b in python_blocks((REPO / "README.md").read_text()) if "corrflow.propagate(" in b]
    assert snippet in python_blocks((REPO / "docs" / "propagation.md").read_text())
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # its own asserts check the result
    assert namespace["masks"].shape == namespace["frames"].shape[:3]


def test_import_corrflow_is_cheap() -> None:
    code = "import sys, corrflow; print(sorted(m for m in ('torch', 'numpy', 'hydra', 'pytorch_lightning') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
    assert callable(corrflow.propagate) and callable(corrflow.load_encoder)


@pytest.mark.parametrize("protocol", ["corrflow", "crw"])
def test_propagate_gives_what_tools_propagate_writes(tmp_path: Path, protocol: str) -> None:
    n = 8
    root = write_davis_tree(tmp_path / "DAVIS", {"seq": n}, size=(32, 48))  # PNG frames: read back exactly
    ref = propagate_run(compose_cfg("task=davis", f"data.root={root}", "task.dataset.split=train", f"output_dir={tmp_path / 'ref'}",
                                    "features=lab", f"protocol={protocol}", "score=false", "overlay=null"))  # fmt: skip
    frames, masks = moving_objects(n, (32, 48), seed=0)  # what write_davis_tree wrote for its first video
    got = corrflow.propagate(frames, masks[0], features="lab", protocol=protocol)
    assert got.shape == (n, 32, 48) and got.dtype == np.uint8
    for t in range(n):
        np.testing.assert_array_equal(got[t], read_indexed_png(Path(ref["results_dir"]) / "seq" / f"{t:05d}.png"), err_msg=f"frame {t}")
    # the same from float (T, 3, H, W) torch frames and a torch mask
    again = corrflow.propagate(torch.from_numpy(frames).permute(0, 3, 1, 2) / 255.0, torch.from_numpy(masks[0]), features="lab", protocol=protocol)
    np.testing.assert_array_equal(again, got)


def test_load_encoder_from_a_checkpoint_and_by_name(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = corrflow_encoder()
    path = tmp_path / "final.ckpt"
    torch.save({"state_dict": {"net.encoder." + k: v for k, v in enc.state_dict().items()},
                "corrflow": encoder_payload(enc, prefix="net.encoder.")}, path)  # fmt: skip
    loaded = corrflow.load_encoder(path)
    assert not loaded.training and loaded.stride == 4
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)
    assert corrflow.load_encoder(str(path), train=True).training
    random = corrflow.load_encoder("random")
    assert not random.training and random.stride == 4

    frames, masks = moving_objects(5, (32, 48), seed=1)
    by_path = corrflow.propagate(frames, masks[0], features=str(path), protocol="corrflow")
    by_module = corrflow.propagate(frames, masks[0], features=loaded, protocol="corrflow")
    np.testing.assert_array_equal(by_path, by_module)
    np.testing.assert_array_equal(by_path[0], masks[0])


def test_bad_input_gets_a_clear_error(tmp_path: Path) -> None:
    frames, masks = moving_objects(3, (16, 24))
    mask = masks[0]
    cases = [
        (dict(frames=frames[0], first_mask=mask), ValueError, r"frames must be \(T, H, W, 3\).*got an array of shape \(16, 24, 3\)"),
        (dict(frames=frames[..., :2], first_mask=mask), ValueError, r"no axis of 3 colour channels"),
        (dict(frames=frames[:0], first_mask=mask), ValueError, r"no frames"),
        (dict(frames=frames.astype(np.int64), first_mask=mask), ValueError, r"got dtype int64"),
        (dict(frames=frames.astype(np.float32), first_mask=mask), ValueError, r"float frames must lie in \[0, 1\], got \[20, 244\]"),
        (dict(frames=frames, first_mask=mask[None]), ValueError, r"first_mask must be an \(H, W\) map.*\(1, 16, 24\)"),
        (dict(frames=frames, first_mask=mask[:8]), ValueError, r"first_mask is 8x24 \(HxW\) but the frames are 16x24"),
        (dict(frames=frames, first_mask=mask.astype(np.float32)), ValueError, r"integer object ids"),
        (dict(frames=frames, first_mask=mask.astype(np.int64) + 300), ValueError, r"ids must lie in 0..255"),
        (dict(frames=frames, first_mask=np.zeros_like(mask)), ValueError, r"first_mask holds no object"),
        (dict(frames=frames, first_mask=mask, protocol="videowalk"), ValueError, r"unknown protocol 'videowalk': one of crw, corrflow, crw_fast"),
        (dict(frames=frames, first_mask=mask, features="sift"), ValueError, r"unknown features 'sift'.*imagenet, lab, random"),
        (dict(frames=frames, first_mask=mask, features=str(tmp_path / "gone.ckpt")), FileNotFoundError, r"gone.ckpt: no such checkpoint"),
        (dict(frames=frames, first_mask=mask, features=torch.nn.Identity()), ValueError, r"Identity has no integer \.stride"),
        (dict(frames=frames, first_mask=mask, features=3), ValueError, r"features must be a name"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            corrflow.propagate(**kwargs)
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="is not a PyTorch checkpoint: it is a text file"):
        corrflow.load_encoder(text)
    with pytest.raises(ValueError, match="unknown features 'checkpoint'"):
        corrflow.load_encoder("checkpoint")
