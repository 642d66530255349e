"""Training throughput: clips per second and peak memory, data loading included.

Each attention backend trains the same configured model on the same data for ``warmup + steps``
optimizer steps in this process; the timed window covers the last ``steps`` steps from the end of
one step to the end of the next, so waiting on the data loader is counted.
"""

from __future__ import annotations

import resource
import time

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from corrflow.utils.conf import CONF_DIR


class _StepTimer(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.clips = warmup, None, None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.device_ids and torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        if trainer.global_step == self.warmup:
            self.start = now
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
        elif trainer.global_step > self.warmup:
            self.end = now
            self.clips += batch["frames"].shape[0]


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def _run_one(backend: str, steps: int, warmup: int, overrides: list[str], workdir: str) -> dict:
    """Train one backend in this process (see ``run_train_benchmark``)."""
    import hydra

    from corrflow.train import prepare_colour_bins, resolve_precision

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True, overrides=[
            "logger=none", f"model.net.attention.backend={backend}", f"trainer.max_steps={warmup + steps}",
            "++trainer.enable_checkpointing=false", "trainer.enable_model_summary=false", *overrides])
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = f"{workdir}/{backend}"
        cfg.callbacks = {}
        del cfg["hydra"]
        cfg.trainer.precision = resolve_precision(cfg.trainer.precision)
    GlobalHydra.instance().clear()
    dm = hydra.utils.instantiate(cfg.data)
    prepare_colour_bins(cfg, dm)
    model = hydra.utils.instantiate(cfg.model)
    timer = _StepTimer(warmup)
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=[timer], logger=False, enable_progress_bar=False)
    row = {"backend": backend, "device": str(trainer.strategy.root_device), "precision": str(cfg.trainer.precision),
           "batch": cfg.data.batch_size, "size": list(cfg.data.size)}
    try:
        trainer.fit(model, datamodule=dm)
        elapsed = timer.end - timer.start
        row |= {"steps": steps, "seconds": elapsed, "clips_per_s": timer.clips / elapsed, "peak_rss_gib": _peak_rss_gib()}
        if torch.cuda.is_available():
            row["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
        row["skipped"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return row


def run_train_benchmark(*, backends: list[str], steps: int, warmup: int, overrides: list[str], workdir: str) -> list[dict]:
    """Train ``warmup + steps`` steps per backend, each in a fresh process (so each peak memory is
    its own); returns one row per backend."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    rows = []
    for backend in backends:  # executor workers are not daemonic, so data-loader workers may start
        with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
            rows.append(pool.submit(_run_one, backend, steps, warmup, list(overrides), workdir).result())
    return rows


def format_train_table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["backend"] == "unfold" and "clips_per_s" in r), None)
    lines = ["| backend | device | precision | batch x size | clips/s | vs unfold | peak GPU GiB | peak RSS GiB |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['backend']} | {r['device']} | {r['precision']} | {r['batch']} x {r['size']} | skipped: {r['skipped']} | | | |")
            continue
        ratio = f"{r['clips_per_s'] / base['clips_per_s']:.2f}x" if base else "-"
        gpu = f"{r['peak_gpu_gib']:.2f}" if "peak_gpu_gib" in r else "-"
        lines.append(
            f"| {r['backend']} | {r['device']} | {r['precision']} | {r['batch']} x {r['size'][0]}x{r['size'][1]} | "
            f"{r['clips_per_s']:.2f} | {ratio} | {gpu} | {r['peak_rss_gib']:.2f} |"
        )
    return "\n".join(lines)
