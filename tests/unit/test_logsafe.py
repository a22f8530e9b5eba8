"""A request cannot forge log lines."""

from __future__ import annotations

import logging

from sesemi.logsafe import OneLineFormatter, escape


def test_control_characters_are_escaped_in_every_value():
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "refused %s %s: %s",
                            ("GET", "/v1/models/m\n2026-01-01 keyservice INFO forged", "bad\r\x1b[2Jreason\u2028x"), None)
    line = OneLineFormatter("%(levelname)s %(message)s").format(rec)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert "\\x0a2026-01-01 keyservice INFO forged" in line
    assert escape("plain text / ok") == "plain text / ok"
