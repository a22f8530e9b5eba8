"""What a blackbox action's Docker image means to the local emulator.

There is no Docker here, so an image name maps to a local command that serves
the same /init + /run protocol the image would serve on port 8080. The
command gets the port in $SESEMI_PORT and $PORT (and `{port}` in its argv is
replaced), listens on 127.0.0.1, and receives its settings the way OpenWhisk
delivers them: through /init's value.env (the action's `init` parameters),
never through the emulator's own environment.

Built in: `sesemi-action` (any registry prefix or tag, e.g.
`ghcr.io/acme/sesemi-action:1.2`) runs the inference action, `python -m app`.
More mappings: `sesemi platform serve --image NAME=COMMAND`.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from sesemi.errors import FormatError, NotFound


@dataclass(frozen=True)
class ImageCommand:
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)

    def render(self, port: int) -> list[str]:
        return [a.replace("{port}", str(port)) for a in self.argv]


BUILTIN: dict[str, ImageCommand] = {
    "sesemi-action": ImageCommand((sys.executable, "-m", "app")),
}


def repository_name(image: str) -> str:
    """`registry:5000/org/sesemi-action:tag@sha256:...` -> `sesemi-action`."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


class ImageMap:
    def __init__(self, extra: Mapping[str, ImageCommand] | None = None) -> None:
        self.images = {**BUILTIN, **(extra or {})}

    @classmethod
    def parse(cls, specs: Sequence[str]) -> "ImageMap":
        extra: dict[str, ImageCommand] = {}
        for spec in specs:
            name, sep, command = spec.partition("=")
            name = name.strip()
            try:
                argv = tuple(shlex.split(command))
            except ValueError as exc:
                raise FormatError(f"--image {name}: cannot parse the command ({exc})") from None
            if not sep or not name or not argv:
                raise FormatError("--image takes NAME=COMMAND, e.g. my-action='python3 server.py'")
            extra[name] = ImageCommand(argv)
        return cls(extra)

    def resolve(self, image: str) -> ImageCommand:
        cmd = self.images.get(image) or self.images.get(repository_name(image))
        if cmd is None:
            known = ", ".join(sorted(self.images))
            raise NotFound(f"image {image!r} has no local command in the emulator (known: {known}; "
                           f"add one with --image NAME=COMMAND)")
        return cmd
