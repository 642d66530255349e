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
fit neither.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TypeVar

__all__ = ["DEBUG_ENV", "UserError", "debug_enabled", "find_user_error", "one_line", "user_error_types", "user_errors"]

DEBUG_ENV = "CORRFLOW_DEBUG"
_DEBUG_ENVS = (DEBUG_ENV, "HYDRA_FULL_ERROR")

F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """An error in what the user asked for or gave (paths, config values, data), with a message
    that says what to change."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types reported as one line."""
    # Imported here, not at module import: tools import this module before anything heavy.
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    from corrflow.data.readers import VideoReadError

    return (
        UserError,
        OSError,  # missing, unreadable or unwritable files and folders, a full disk
        ValueError,  # bad config values, bad data, unreadable checkpoints: our readers name the file
        ImportError,  # a missing optional package: the message names it (and how to install it)
        VideoReadError,
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
            raise SystemExit(f"error: {one_line(err)}") from None

    return wrapper  # type: ignore[return-value]
