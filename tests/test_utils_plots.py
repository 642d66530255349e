import pytest
from PIL import Image

from corrflow.utils.plots import read_metrics_csv, plot_training_curves


def test_reads_lightning_csv_and_plots(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,lr-Adam,step,train/loss_rec,train/loss_step,train/p_gt\n"
        ",0.0002,0,,,\n"
        "0,,0,4.0,4.5,0.9\n"
        "0,,1,3.0,3.5,0.75\n"
        "0,,2,2.0,2.5,0.6\n"
    )
    s = read_metrics_csv(csv)
    assert s["train/loss_step"] == [(0, 4.5), (1, 3.5), (2, 2.5)]
    assert s["lr-Adam"] == [(0, 0.0002)]
    assert "epoch" not in s
    out = plot_training_curves(csv, tmp_path / "curves.png", title="t")
    with Image.open(out) as im:
        assert im.size[0] > 1000 and im.size[1] > 300


def test_empty_csv_is_an_error(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,step\n")
    with pytest.raises(ValueError, match="no metrics"):
        read_metrics_csv(csv)
