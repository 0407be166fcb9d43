"""The Optuna storage behind a study: any SQLAlchemy URL, or Optuna's journal file."""

from __future__ import annotations

from typing import Any

from ..errors import UserError


def open_storage(url: str, *, heartbeat_s: int | None = None) -> Any:
    """An Optuna storage object for a URL: any SQLAlchemy URL (``sqlite:///``, ``postgresql://``),
    or ``journal:PATH`` for Optuna's journal file.

    Args:
        url: where the study lives.
        heartbeat_s: for an SQL storage, seconds between the heartbeats of a running trial; a
            trial silent for three times as long is failed as interrupted (see ``study.py``).

    Raises:
        UserError: the storage cannot be opened (the message names the URL without password).
    """
    import optuna

    from .study import log_stale, quiet_optuna

    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
        with quiet_optuna():
            return optuna.storages.RDBStorage(
                url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=heartbeat_s,
                grace_period=3 * heartbeat_s if heartbeat_s else None,
                heartbeat_stale_trial_callback=log_stale if heartbeat_s else None)
    except ModuleNotFoundError as err:
        raise UserError(f"cannot open study storage {hide_password(url)!r}: its driver is not "
                        f"installed ({err}); pip install 'autorank[postgres]'") from err
    except Exception as err:  # SQLAlchemy raises many types, all meaning "cannot open"
        raise UserError(f"cannot open study storage {hide_password(url)!r}: {type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}") from err


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": 10}}
    return {}


def hide_password(url: str) -> str:
    """The storage URL as it may be shown and saved: its password replaced by ``***``."""
    if url.startswith("journal:"):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def run_storage(saved: str | None, given: str | None) -> str | None:
    """The storage URL of a run: the one saved in its directory (password hidden), or
    ``given`` (``--storage``) when it names the same storage, which it must when the saved URL
    hid a password.

    Raises:
        UserError: ``given`` names another storage, or a password is needed and not given.
    """
    if given is None:
        if saved and ":***@" in saved:
            raise UserError(f"the study of this run is in {saved!r}: pass --storage with its "
                            "password (or keep the password in ~/.pgpass)")
        return saved
    if saved is not None and hide_password(given) != saved:
        raise UserError(f"--storage {hide_password(given)!r} is not where this run's study is "
                        f"({saved!r})")
    return given
