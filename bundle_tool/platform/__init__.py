"""A local emulator of the parts of Apache OpenWhisk that SeSeMI uses (see
docs/platform.md): the REST API for actions and blocking invocations, and an
invoker whose "containers" are local processes speaking /init and /run.

It lives in bundle_tool because it is local tooling, like the command line
that starts it: production talks to a real OpenWhisk with the same client
(`sesemi.openwhisk`), so nothing outside development imports this package.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sesemi import logsafe

if TYPE_CHECKING:
    from .emulator import Platform, Settings
    from .images import ImageMap

__all__ = ["ImageMap", "Platform", "Settings", "serve"]


def __getattr__(name: str) -> Any:
    """Loaded on first use: every `sesemi` command imports bundle_tool.platform.cli,
    and the emulator's import (~90 ms) would otherwise delay each of them."""
    if name in ("Platform", "Settings"):
        from . import emulator

        return getattr(emulator, name)
    if name == "ImageMap":
        from .images import ImageMap

        return ImageMap
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def serve(settings: "Settings", images: "ImageMap", auth: str, *, host: str = "127.0.0.1", port: int = 3233,
          threads: int = 64) -> None:
    from sesemi.gunicorn_serve import serve as gunicorn_serve

    from .api import create_app
    from .emulator import Platform

    logsafe.configure("platform")  # one line per record, control characters escaped
    settings.work_dir = Path(settings.work_dir)
    holder: dict[str, Platform] = {}

    def factory():
        platform = Platform(settings, images)
        holder["platform"] = platform
        logging.getLogger("sesemi.platform").info(
            "OpenWhisk emulator on %s:%d: namespace %s, keep-alive %gs, at most %d containers",
            host, port, settings.namespace, settings.keep_alive_s, settings.max_containers)
        return create_app(platform, auth)

    def on_exit() -> None:
        if "platform" in holder:
            holder["platform"].shutdown()

    gunicorn_serve(factory, host=host, port=port, threads=threads, name="sesemi-platform", on_exit=on_exit)
