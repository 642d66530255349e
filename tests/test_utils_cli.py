"""corrflow.utils.cli: user errors become one 'error:' line and exit status 1; programming errors,
and everything under CORRFLOW_DEBUG=1, keep their traceback. Plus the tools that use it."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from corrflow.data.video.readers import VideoReadError
from corrflow.utils.cli import UserError, find_user_error, one_line, user_errors

REPO = Path(__file__).resolve().parents[1]


def run_tool(script: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run ``python <script> <args>`` from the repository root, without the debug variables
    (unless ``env`` sets them), on one thread."""
    base = {k: v for k, v in os.environ.items() if k not in ("CORRFLOW_DEBUG", "HYDRA_FULL_ERROR")}
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={**base, "OMP_NUM_THREADS": "1", **(env or {})},
    )  # fmt: skip


def assert_one_clear_line(proc: subprocess.CompletedProcess, pattern: str) -> str:
    """Exit status 1, no traceback, and exactly one stderr line, 'error: ...', matching ``pattern``."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    for name in ("CORRFLOW_DEBUG", "HYDRA_FULL_ERROR"):
        monkeypatch.setenv(name, "")  # recorded, so that whatever a test leaves is undone
        monkeypatch.delenv(name)


def raising(exc: BaseException):
    @user_errors
    def main(x: int = 0) -> int:
        raise exc

    return main


# -- the helper --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError("DAVIS root not found: /nope"),
        ValueError("a.png: mask is 4x4, the frames are 8x8"),
        VideoReadError("clip.mp4: cannot open video"),
        UserError("colour_bins.path is missing"),
        PermissionError("cannot write /root/x"),
        ImportError("imagenet features need: pip install efficientnet-lite-pytorch"),
    ],
)
def test_user_errors_exit_with_one_line(exc: BaseException) -> None:
    with pytest.raises(SystemExit) as info:
        raising(exc)()
    assert info.value.code == f"error: {exc}"


def test_the_message_is_joined_onto_one_line() -> None:
    with pytest.raises(SystemExit) as info:
        raising(ValueError("first line\n  second line\n"))()
    assert info.value.code == "error: first line second line"
    assert one_line(ValueError("")) == "ValueError"


def test_a_wrapped_hydra_instantiate_error_shows_the_original_message(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"_target_": "corrflow.data.vos.davis.DAVISDataset", "root": str(tmp_path / "nope")})
    with pytest.raises(Exception) as raised:
        instantiate(cfg)
    assert "Error in call to target" in str(raised.value)  # Hydra's wrapper, several lines
    assert isinstance(find_user_error(raised.value), FileNotFoundError)
    with pytest.raises(SystemExit) as info:
        raising(raised.value)()
    assert info.value.code == f"error: DAVIS root not found: {tmp_path / 'nope'} (set data.root=... or CORRFLOW_DATA)"


@pytest.mark.parametrize("exc", [RuntimeError("shape mismatch"), KeyError("net"), TypeError("bad call"), AssertionError()])
def test_programming_errors_keep_their_traceback(exc: BaseException) -> None:
    with pytest.raises(type(exc)) as info:
        raising(exc)()
    assert info.value is exc


def test_a_programming_error_inside_hydra_wrapper_is_not_hidden() -> None:
    from hydra.errors import InstantiationException

    try:
        try:
            raise RuntimeError("bug")
        except RuntimeError as e:
            raise InstantiationException("Error in call to target 'x':\nRuntimeError('bug')") from e
    except InstantiationException as wrapped:
        assert find_user_error(wrapped) is None
        with pytest.raises(InstantiationException):
            raising(wrapped)()


def test_a_user_error_raised_from_a_programming_error_is_still_a_user_error() -> None:
    try:
        try:
            raise KeyError("x")
        except KeyError as e:
            raise ValueError("bad value") from e
    except ValueError as err:
        assert find_user_error(err) is err


@pytest.mark.parametrize("name", ["CORRFLOW_DEBUG", "HYDRA_FULL_ERROR"])
def test_debug_variable_keeps_the_traceback(monkeypatch, name: str) -> None:
    monkeypatch.setenv(name, "1")
    exc = FileNotFoundError("gone")
    with pytest.raises(FileNotFoundError) as info:
        raising(exc)()
    assert info.value is exc
    assert os.environ.get("HYDRA_FULL_ERROR") == "1"  # so that Hydra prints the whole trace too


def test_debug_zero_is_off(monkeypatch) -> None:
    monkeypatch.setenv("CORRFLOW_DEBUG", "0")
    with pytest.raises(SystemExit):
        raising(ValueError("x"))()


def test_the_decorated_function_is_unchanged_otherwise() -> None:
    @user_errors
    def main(a: int, *, b: int = 2) -> int:
        """doc"""
        return a + b

    assert main(1, b=3) == 4
    assert main.__doc__ == "doc" and main.__wrapped__(1) == 3  # Hydra finds the tool's file through __wrapped__


# -- the tools ---------------------------------------------------------------------------------

def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"corrflow_tools_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_tool_main_is_wrapped() -> None:
    for script in sorted((REPO / "tools").glob("*.py")):
        text = script.read_text()
        assert "@user_errors\ndef main(" in text, f"{script.name}: main is not decorated with @user_errors"


def test_import_colour_bins_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        load_tool("import_colour_bins").main([str(tmp_path / "missing.npy")])
    assert info.value.code == f"error: centroid file not found: {tmp_path / 'missing.npy'}"


def test_plot_training_without_metrics(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        load_tool("plot_training").main([str(tmp_path)])
    assert str(info.value.code).startswith(f"error: no metrics.csv under {tmp_path}")


def test_train_with_a_missing_checkpoint_is_one_line(tmp_path: Path) -> None:
    proc = run_tool(
        REPO / "tools" / "train.py", f"ckpt_path={tmp_path / 'gone.ckpt'}", f"hydra.run.dir={tmp_path / 'hydra'}",
        f"paths.log_dir={tmp_path / 'logs'}",
    )  # fmt: skip
    assert_one_clear_line(proc, rf"^error: ckpt_path not found: {re.escape(str(tmp_path / 'gone.ckpt'))}$")
