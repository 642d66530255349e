"""tools/flow.py and ``flow(cfg)`` on a generated frame folder: a random texture moving 4 pixels
right a frame (one feature cell of features=lab), its arrays, pictures and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from corrflow.flow import confidence_picture, flow, flow_picture
from tests.test_tools_propagate import make_checkpoint
from tests.test_utils_cli import assert_one_clear_line, run_tool

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def moving_texture_folder(folder: Path, *, n_frames: int = 4, step: int = 4, size=(48, 64), seed: int = 0) -> Path:
    """Frames of a smooth random colour texture whose content moves ``step`` pixels right a frame."""
    rng = np.random.default_rng(seed)
    h, w = size
    base = rng.integers(0, 256, (h // 2 + 8, (w + step * n_frames) // 2 + 8, 3)).astype(np.uint8)
    big = np.asarray(Image.fromarray(base).resize((base.shape[1] * 4, base.shape[0] * 4), Image.Resampling.BICUBIC))
    folder.mkdir(parents=True, exist_ok=True)
    x0 = step * n_frames
    for t in range(n_frames):
        Image.fromarray(big[8 : 8 + h, x0 - step * t : x0 - step * t + w]).save(folder / f"{t:05d}.png")
    return folder


def compose_cfg(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="flow", overrides=[*overrides, "progress=false", "device=cpu"])
    GlobalHydra.instance().clear()
    return cfg


def test_flow_of_a_moving_texture(tmp_path: Path) -> None:
    video = moving_texture_folder(tmp_path / "clip")
    result = flow(compose_cfg(f"video={video}", "features=lab", f"output_dir={tmp_path / 'out'}", "radius=3"))
    out = tmp_path / "out" / "clip"
    assert result["videos"][0]["pairs"] == 3
    assert sorted(p.name for p in (out / "arrays").iterdir()) == ["00000.npz", "00001.npz", "00002.npz"]
    with np.load(out / "arrays" / "00001.npz") as z:
        disp, conf = z["displacement"], z["confidence"]
        assert disp.shape == (2, 12, 16) and conf.shape == (12, 16) and disp.dtype == np.float32
        assert int(z["stride"]) == 4 and z["frame_size"].tolist() == [48, 64]
    inner = disp[:, 2:-2, 2:-2]  # away from the border the texture enters through
    assert abs(np.median(inner[0]) - 1.0) < 0.1 and abs(np.median(inner[1])) < 0.1  # 4 px right = 1 cell
    picture = np.asarray(Image.open(out / "flow" / "00001.png"))
    assert picture.shape == (48, 64, 3)
    assert (out / "side_by_side.gif").is_file() and (out / "side_by_side.png").is_file()
    assert (tmp_path / "out" / "config.yaml").is_file()


def test_flow_picture_fixed_scale_and_colours() -> None:
    disp = torch.zeros(2, 4, 6)
    disp[0, :, 3:] = 7.0  # right, at full scale
    pic = flow_picture(disp, max_norm=7.0)
    assert pic.shape == (4, 6, 3) and pic.dtype == np.uint8
    assert (pic[:, :3] == 255).all()  # no motion is white
    assert (pic[:, 3:] != 255).any()
    half = flow_picture(disp / 2, max_norm=7.0)
    assert (half[0, 4] > pic[0, 4]).any()  # a shorter vector is paler, on the same scale
    torch.testing.assert_close(torch.from_numpy(flow_picture(disp * 3, max_norm=7.0)), torch.from_numpy(pic))  # clipped
    grey = confidence_picture(torch.tensor([[-0.5, 0.0, 0.5, 1.0]]))
    assert grey[0, :, 0].tolist() == [0, 0, 128, 255]


def test_tool_error_is_one_line(tmp_path: Path) -> None:
    proc = run_tool(REPO / "tools" / "flow.py", f"video={tmp_path / 'nope.mp4'}", "features=lab", "progress=false",
                    f"output_dir={tmp_path / 'o'}", f"hydra.run.dir={tmp_path / 'h'}")  # fmt: skip
    assert_one_clear_line(proc, "nope.mp4")


def test_errors_name_what_to_change(tmp_path: Path) -> None:
    one = moving_texture_folder(tmp_path / "one", n_frames=1)
    with pytest.raises(ValueError, match="at least 2 frames") as e:
        flow(compose_cfg(f"video={one}", "features=lab", f"output_dir={tmp_path / 'o'}"))
    assert str(one) in str(e.value)
    with pytest.raises(Exception, match="ckpt="):
        flow(compose_cfg(f"video={one}", f"output_dir={tmp_path / 'o'}"))
    with pytest.raises(ValueError, match="estimator"):
        flow(compose_cfg(f"video={one}", "features=lab", "estimator=median", f"output_dir={tmp_path / 'o'}"))


def test_flow_from_a_corrflow_checkpoint(tmp_path: Path) -> None:
    video = moving_texture_folder(tmp_path / "clip", n_frames=2)
    ckpt = make_checkpoint(tmp_path / "last.ckpt")
    result = flow(compose_cfg(f"video={video}", f"ckpt={ckpt}", f"output_dir={tmp_path / 'out'}", "radius=3", "overlay=null"))
    assert result["videos"][0]["pairs"] == 1
    with np.load(tmp_path / "out" / "clip" / "arrays" / "00000.npz") as z:
        assert z["displacement"].shape == (2, 12, 16) and int(z["stride"]) == 4
        assert np.isfinite(z["displacement"]).all() and (np.abs(z["displacement"]) <= 3).all()
    assert not (tmp_path / "out" / "clip" / "side_by_side.gif").exists()
