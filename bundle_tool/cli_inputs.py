"""Checks of what a user hands the command line (URLs, key-service keys,
input files), each failure one FormatError naming the argument."""

from __future__ import annotations

from urllib.parse import urlsplit

import numpy as np

from sesemi.errors import FormatError


def check_url(url: str, what: str) -> str:
    """http(s)://HOST[:PORT][/PATH]; refused here with a clear line, before
    urllib3 guesses a scheme (and warns that guessing is deprecated)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise FormatError(f"{what}: {url!r} is not an http(s) URL (e.g. http://127.0.0.1:8443)")
    return url


def check_urls(urls: str, what: str) -> str:
    """URL[,URL...]: the replicas of one key service, each checked."""
    for url in urls.split(","):
        check_url(url.strip(), what)
    return urls


def check_ks_key(value: str, what: str = "--ks-key") -> str:
    """The key service's Ed25519 signing key as `sesemi ks attest` pins it."""
    if len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise FormatError(f"{what}: expected the key service's 32-byte signing key in hex (64 digits), "
                          "or 'pinned'")
    return value.lower()


def load_inputs(path: str) -> dict[str, np.ndarray]:
    """One array from a .npy (named input_0), or every array of a .npz by name."""
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        return {"input_0": np.load(path, allow_pickle=False)}
    except OSError as exc:
        raise FormatError(f"cannot read input {path}: {exc.strerror or type(exc).__name__}") from None
    except Exception as exc:  # noqa: BLE001 - numpy's parsers raise many types on a damaged file:
        # EOFError (empty .npy), BadZipFile (truncated .npz), ValueError (pickled array), tokenize's
        # TokenError or SyntaxError (a mangled header), zlib.error, MemoryError (a header's huge shape)
        raise FormatError(f"cannot read input {path}: not a valid .npy/.npz file ({type(exc).__name__})") from None
