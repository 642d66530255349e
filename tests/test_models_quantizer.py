import numpy as np
import pytest
import torch
import kornia

from corrflow.data.video.sources import VideoSource
from corrflow.models.quantizer import ColourQuantizer, fit_colour_bins, load_colour_bins, save_colour_bins
from tests.helpers.synthetic import write_frame_folder


def lab_to_rgb_image(l: float, ab: torch.Tensor, hw=(4, 4)) -> torch.Tensor:
    """(K, 2) (a, b) -> (K, 3, h, w) RGB images of constant colour."""
    k = ab.shape[0]
    lab = torch.cat([torch.full((k, 1), l), ab], 1)[:, :, None, None].expand(k, 3, *hw)
    return kornia.color.lab_to_rgb(lab.contiguous()).clamp(0, 1)


def test_quantizer_round_trips_its_centroids():
    centroids = torch.tensor([[-20.0, 30.0], [10.0, -10.0], [0.0, 0.0], [25.0, 15.0]])
    q = ColourQuantizer(centroids)
    rgb = lab_to_rgb_image(60.0, centroids)
    idx = q(rgb)
    assert idx.shape == (4, 4, 4)
    assert (idx == torch.arange(4)[:, None, None]).all()


def test_to_rgb_of_a_one_hot_keeps_lightness_and_sets_the_bin_colour():
    centroids = torch.tensor([[-20.0, 30.0], [10.0, -10.0]])
    q = ColourQuantizer(centroids)
    rgb = lab_to_rgb_image(50.0, centroids[[1]])  # (1, 3, 4, 4), colour of bin 1
    onehot = torch.zeros(1, 2, 4, 4)
    onehot[:, 1] = 1
    back = q.to_rgb(rgb, onehot)
    torch.testing.assert_close(back, rgb, atol=2e-3, rtol=0)


def test_fit_finds_the_colours_of_the_video(tmp_path):
    folder = write_frame_folder(tmp_path / "v", n_frames=6, ext="png")
    centroids, meta = fit_colour_bins([VideoSource(str(folder), "frames")], n_bins=3, n_frames=6, pixels_per_frame=500, size=(32, 48), progress=False)
    assert centroids.shape == (3, 2) and centroids.dtype == np.float32
    assert meta["frames"] == 6 and meta["n_bins"] == 3
    # every pixel of the (three-colour) video lies on a centroid
    q = ColourQuantizer(centroids)
    from corrflow.data.video.readers import read_frames
    from corrflow.data.video.resize import resize_frames
    from corrflow.models.quantizer import rgb_to_ab

    frames = resize_frames(read_frames(VideoSource(str(folder), "frames"), [0, 3]), (32, 48))
    ab = rgb_to_ab(frames)
    nearest = q.centroids[q(frames)].permute(0, 3, 1, 2)
    assert (ab - nearest).abs().max() < 1.0


def test_artefact_round_trip_and_errors(tmp_path):
    c = np.arange(32, dtype=np.float32).reshape(16, 2)
    save_colour_bins(tmp_path / "bins.npz", c, {"n_bins": 16})
    back, meta = load_colour_bins(tmp_path / "bins.npz", n_bins=16)
    np.testing.assert_array_equal(back, c)
    assert meta == {"n_bins": 16}
    with pytest.raises(ValueError, match="expects 8"):
        load_colour_bins(tmp_path / "bins.npz", n_bins=8)
    np.savez(tmp_path / "bad.npz", centroids=np.zeros((16, 3)))
    with pytest.raises(ValueError, match=r"shape \(K, 2\)"):
        ColourQuantizer.from_file(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        load_colour_bins(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_colour_bins(tmp_path / "missing.npz")


def test_import_plain_and_pickled_centroids(tmp_path):
    """The released CorrFlow centroids are a pickled (16, 2) array (ndarray.dump): imported only
    with allow_pickle; a plain .npy needs nothing; the artefact then loads like a fitted one."""
    from corrflow.models.quantizer import import_colour_bins

    c = np.random.default_rng(0).uniform(-60, 60, size=(16, 2))
    plain, pickled = tmp_path / "plain.npy", tmp_path / "dumped.npy"
    np.save(plain, c)
    c.dump(pickled)
    got, meta = import_colour_bins(plain, tmp_path / "a.npz")
    np.testing.assert_allclose(got, c.astype(np.float32))
    assert meta["n_bins"] == 16 and meta["imported_from"].endswith("plain.npy")
    with pytest.raises(ValueError, match="pickle"):
        import_colour_bins(pickled, tmp_path / "b.npz")
    got, _ = import_colour_bins(pickled, tmp_path / "b.npz", allow_pickle=True)
    np.testing.assert_allclose(got, c.astype(np.float32))
    assert load_colour_bins(tmp_path / "b.npz", n_bins=16)[0].shape == (16, 2)
    np.save(tmp_path / "bad.npy", np.zeros((16, 3)))
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        import_colour_bins(tmp_path / "bad.npy", tmp_path / "c.npz")
    with pytest.raises(FileNotFoundError):
        import_colour_bins(tmp_path / "missing.npy", tmp_path / "d.npz")
