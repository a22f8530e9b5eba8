"""The `sesemi` command line: the parser and the one place errors become a
line on stderr and an exit code. Commands live in bundle_tool/commands.py
(owner and user), bundle_tool/serve_commands.py (servers, demo) and
bundle_tool/platform/cli.py (deploy, emulator, router)."""

from __future__ import annotations

import os
import sys
from typing import Sequence

from sesemi.errors import FormatError, SesemiError
from sesemi.logsafe import escape

from .cli_parser import HelpFormatter as HelpFormatter
from .cli_parser import _Version as _Version
from .cli_parser import build_parser
from .output import Out


def _oserror_line(exc: OSError) -> str:
    what = exc.strerror or str(exc) or type(exc).__name__
    return f"{what}: {exc.filename}" if getattr(exc, "filename", None) else what


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = args.fn(args)
        if isinstance(out, Out):
            out.emit(bool(getattr(args, "json", False)))
    except SesemiError as exc:
        # Escaped: the message may quote a server's answer, which the host on the path
        # chooses (a terminal escape sequence, a forged second line).
        print(f"sesemi: error: {escape(str(exc))}", file=sys.stderr)
        return 2 if isinstance(exc, FormatError) else 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"sesemi: error: {escape(_oserror_line(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:
        if os.environ.get("SESEMI_DEBUG"):
            raise
        # the type only: a library's message can quote its input (a model, a key)
        print(f"sesemi: error: internal error ({type(exc).__name__}); SESEMI_DEBUG=1 shows the traceback",
              file=sys.stderr)
        return 70  # EX_SOFTWARE
    return 0
