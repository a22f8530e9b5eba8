"""Logging that a request cannot forge lines in.

Values in log lines come from requests (paths, reasons that quote them): a
`%0A` in a URL, once decoded, would start a new, forged line. The formatter
escapes every control character (C0, DEL, C1 and the Unicode line and
paragraph separators) in the finished message, so each record stays one line
whatever any of its values holds.
"""

from __future__ import annotations

import logging
import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", text)


class OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return escape(super().format(record))


def configure(component: str, level: int = logging.INFO) -> None:
    """The servers' root logging: `time component LEVEL message`, one line per record."""
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter(f"%(asctime)s {component} %(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
