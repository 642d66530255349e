import pytest
from PIL import Image

from corrflow.utils.plots import plot_training_curves, read_metrics_csv


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


def test_a_resumed_runs_csv_pieces_join_into_one_series(tmp_path):
    """version_0 ran steps 0-3 and was resumed from its step-2 checkpoint as version_1 (steps 2-4):
    steps 2 and 3 of version_0 were trained again and give way; version order is numeric."""
    header = "epoch,step,train/loss_step\n"
    for version, rows in {0: "0,0,5.0\n0,1,4.0\n0,2,3.0\n0,3,2.9\n", 1: "0,2,3.1\n0,3,2.8\n0,4,2.0\n", 10: ""}.items():
        (tmp_path / "csv" / f"version_{version}").mkdir(parents=True)
        (tmp_path / "csv" / f"version_{version}" / "metrics.csv").write_text(header + rows)
    from corrflow.utils.plots import run_metrics_csvs

    pieces = run_metrics_csvs(tmp_path)
    assert [p.parent.name for p in pieces] == ["version_0", "version_1", "version_10"]
    s = read_metrics_csv(*pieces)
    assert s["train/loss_step"] == [(0, 5.0), (1, 4.0), (2, 3.1), (3, 2.8), (4, 2.0)]
