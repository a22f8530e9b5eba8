"""What a command prints: its data (the --json form) and the text a person reads."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Out:
    data: Any
    text: str

    def emit(self, as_json: bool) -> None:
        if as_json:
            print(json.dumps(self.data, indent=2, sort_keys=True, default=str))
        elif self.text:
            print(self.text)
        sys.stdout.flush()
