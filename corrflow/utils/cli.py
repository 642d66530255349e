"""One clear line for the errors a user can cause, in every ``tools/*.py`` script.

A tool's ``main`` is decorated with :func:`user_errors` (under ``@hydra.main`` for the Hydra
tools; Hydra looks through the decorator). An exception of a user-error type (a missing,
unreadable or unwritable file, a bad value or bad data, a video that cannot be decoded, a missing mandatory
config value, a missing optional package), raised directly or wrapped by Hydra's ``instantiate``,
ends the program with ``error: <message>`` on one stderr line and exit status 1. Anything else is
a programming error and keeps its traceback. ``CORRFLOW_DEBUG=1`` (or Hydra's own
``HYDRA_FULL_ERROR=1``) shows the full traceback of user errors too (it sets ``HYDRA_FULL_ERROR``
for Hydra, which otherwise prints only the message of its ``instantiate`` wrappers).

The data readers, the metrics and the checkpoint loaders raise ``FileNotFoundError`` /
``ValueError`` with messages that name the file; :class:`UserError` is there for user errors that
fit neither. A tool that checks every input before using any reports all it found at once
(:func:`raise_user_errors`): one ``error:`` line each.

A Hydra tool's run folder (``logs/<task>/runs/<time>/``) is made by Hydra before the tool starts;
:func:`discard_unused_run_dir` removes it again when the run fails having written nothing there
but Hydra's own config and log, so a failed run leaves no empty run folder behind.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = [
    "DEBUG_ENV", "UserError", "UserErrors", "debug_enabled", "discard_unused_run_dir", "find_user_error", "one_line",
    "raise_user_errors", "register_user_error", "user_error_types", "user_errors",
]  # fmt: skip

DEBUG_ENV = "CORRFLOW_DEBUG"
_DEBUG_ENVS = (DEBUG_ENV, "HYDRA_FULL_ERROR")

F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """An error in what the user asked for or gave (paths, config values, data), with a message
    that says what to change."""


class UserErrors(UserError):
    """Several user errors found together (a tool that checks every input before it uses any):
    :func:`user_errors` reports each on its own ``error:`` line. ``errors`` holds the user errors
    themselves (unwrapped from Hydra's ``instantiate`` wrappers)."""

    def __init__(self, errors: Sequence[BaseException]) -> None:
        self.errors = [find_user_error(e) or e for e in errors]
        super().__init__("\n".join(one_line(e) for e in self.errors))


def raise_user_errors(errors: Sequence[BaseException]) -> None:
    """Nothing when ``errors`` is empty; the one error itself (its type kept); or all of them as
    :class:`UserErrors`."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise UserErrors(errors)


_REGISTERED: list[type[BaseException]] = []


def register_user_error(exc_type: type[BaseException]) -> type[BaseException]:
    """Report ``exc_type`` as a user error too (a class decorator): the modules above this one
    register theirs (:class:`corrflow.data.video.readers.VideoReadError`: a video that cannot be
    decoded), so that this module imports none of them. An error of a module never imported
    cannot be raised, so registering at import is enough."""
    if exc_type not in _REGISTERED:
        _REGISTERED.append(exc_type)
    return exc_type


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types reported as one line."""
    # Imported here, not at module import: tools import this module before anything heavy.
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    return (
        UserError,
        OSError,  # missing, unreadable or unwritable files and folders, a full disk
        ValueError,  # bad config values, bad data, unreadable checkpoints: our readers name the file
        ImportError,  # a missing optional package: the message names it (and how to install it)
        *_REGISTERED,  # VideoReadError (a video that cannot be decoded)
        MissingMandatoryValue,  # a `???` config value left unset
        InterpolationResolutionError,  # e.g. ${oc.env:...} of an unset variable
    )


def _wrapper_types() -> tuple[type[BaseException], ...]:
    """Exceptions that only wrap another one (its ``__cause__``): Hydra's ``instantiate`` errors."""
    from hydra.errors import InstantiationException

    return (InstantiationException,)


def find_user_error(exc: BaseException) -> BaseException | None:
    """``exc`` if it is a user error, or the user error a wrapper (Hydra's ``InstantiationException``)
    was raised from; None for anything else (a programming error keeps its traceback)."""
    user, wrappers = user_error_types(), _wrapper_types()
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, user):
            return exc
        if not isinstance(exc, wrappers):
            return None
        exc = exc.__cause__
    return None


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its lines joined by spaces; its type name if empty)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if isinstance(exc, ImportError) and exc.name and exc.name not in text:
        text = f"{text} (module {exc.name})"
    return text or type(exc).__name__


def debug_enabled() -> bool:
    """True when ``CORRFLOW_DEBUG`` or ``HYDRA_FULL_ERROR`` is set to something other than '' / '0'."""
    return any(os.environ.get(name, "") not in ("", "0") for name in _DEBUG_ENVS)


def user_errors(func: F) -> F:
    """Decorate a tool's ``main``: a user error ends the program with ``error: <message>`` (one
    stderr line, exit status 1); other exceptions, and all of them under ``CORRFLOW_DEBUG=1``,
    propagate with their traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - sorted below; everything else is re-raised
            if debug_enabled():
                # Hydra prints only the message of its own wrappers unless HYDRA_FULL_ERROR is set;
                # it reads the variable after this re-raise.
                os.environ.setdefault("HYDRA_FULL_ERROR", "1")
                raise
            err = find_user_error(exc)
            if err is None:
                raise
            errors = err.errors if isinstance(err, UserErrors) else [err]
            raise SystemExit("\n".join(f"error: {one_line(e)}" for e in errors)) from None

    return wrapper  # type: ignore[return-value]


def _written_since(folder: Path, since: float, *, skip: set[Path]) -> bool:
    """Whether any file under ``folder`` (but those under ``skip``) was written at or after ``since``."""
    for path in folder.rglob("*"):
        if any(path == s or s in path.parents for s in skip):
            continue
        try:
            if path.is_file() and path.stat().st_mtime >= since:
                return True
        except OSError:
            continue
    return False


def _close_log_files(folder: Path) -> None:
    """Close and detach the logging file handlers that write into ``folder`` (Hydra's job log)."""
    loggers = [logging.getLogger(), *(lg for lg in list(logging.root.manager.loggerDict.values()) if isinstance(lg, logging.Logger))]
    for logger in loggers:
        for handler in list(logger.handlers):
            name = getattr(handler, "baseFilename", None)
            if name and folder in Path(name).parents:
                logger.removeHandler(handler)
                handler.close()


def drop_unused_run_dir(run_dir: str | os.PathLike, *, config_subdir: str | None, log_name: str | None, since: float) -> Path | None:
    """After a failed run: remove what Hydra made for it when the run itself wrote nothing.

    ``run_dir`` holding only this run's config folder (``config_subdir``, e.g. ``.hydra``) and its
    log (``log_name``) is removed, and so are its ``runs/`` parent and the task's folder above that
    when they are left empty. A run folder that holds more (a resumed run's own folder) is kept;
    when nothing in it was written since ``since``, only this run's config folder
    (``.hydra/resumed-<time>``) goes. Returns what was removed, or None.
    """
    run = Path(run_dir)
    if not run.is_dir():
        return None
    config = run / config_subdir if config_subdir else None
    own = {p for p in (config, run / log_name if log_name else None) if p is not None}
    others = [p for p in run.iterdir() if p not in own and not (config is not None and p in config.parents)]
    if not others and config is not None and config.parent == run:  # nothing but Hydra's config and log
        _close_log_files(run)
        shutil.rmtree(run, ignore_errors=True)
        if run.parent.name == "runs":  # logs/<task>/runs/<time>: runs/ and <task>/ too, when left empty
            with contextlib.suppress(OSError):
                run.parent.rmdir()  # fails on a folder that holds anything
                run.parent.parent.rmdir()
        return run
    if config is not None and config.parent != run and config.is_dir() and not _written_since(run, since, skip=own):
        shutil.rmtree(config, ignore_errors=True)  # a resumed run's config record, for a run that never ran
        return config
    return None


@contextlib.contextmanager
def discard_unused_run_dir() -> Iterator[None]:
    """In a Hydra tool's ``main``: when the body fails (any exception) having written nothing into
    the run folder Hydra made for it, remove that folder (:func:`drop_unused_run_dir`). Outside a
    Hydra run it does nothing."""
    from hydra.core.hydra_config import HydraConfig

    started = time.time() - 1.0  # file times may be rounded down to the second
    try:
        yield
    except BaseException:
        if HydraConfig.initialized():
            hc = HydraConfig.get()
            output_dir = hc.runtime.output_dir
            if output_dir:
                drop_unused_run_dir(output_dir, config_subdir=hc.output_subdir, log_name=f"{hc.job.name}.log", since=started)
        raise
