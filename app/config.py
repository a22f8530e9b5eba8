"""Action settings. Sources, later wins: defaults, process environment (in
Occlum: `env.default`, which is measured), then /init's `value.env` (from the
platform, so untrusted).

Settings that change what the enclave protects are in `trusted()` and go into
the simulated measurement: if the platform changes one through /init, the
mrenclave changes and the key service stops releasing keys. Settings that only
change speed or where to connect are not measured; the key-service URL is safe
to take from the platform because keys are only ever released wrapped to this
enclave's own ephemeral key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from urllib.parse import urlsplit

from sesemi.attestation.backends import check_tee_name
from sesemi.measure import action_trusted_config
from sesemi.errors import AccessDenied, FormatError

_ENV = {
    "ks_url": "SESEMI_KS_URL",
    "pack_path": "SESEMI_PACK",
    "tee": "SESEMI_TEE",
    "key_ttl_s": "SESEMI_KEY_TTL",
    "pool_size": "SESEMI_POOL_SIZE",
    "interp_threads": "SESEMI_INTERP_THREADS",
    "memory_budget_mb": "SESEMI_MEMORY_BUDGET_MB",
    "insecure_sim_debug": "SESEMI_INSECURE_SIM_DEBUG",
    "ks_key": "SESEMI_KS_KEY",
    "ks_budget_s": "SESEMI_KS_BUDGET",
}

# Settings that change what the enclave protects. They come only from the
# process environment (in Occlum: Occlum.json's env.default, which the
# enclave's measurement covers), never from /init, which the platform writes:
# the CPU does not measure /init, so a platform could otherwise stretch the
# key TTL (the revocation bound) without changing MRENCLAVE.
TRUSTED_ENV = frozenset({"SESEMI_TEE", "SESEMI_KEY_TTL", "SESEMI_INSECURE_SIM_DEBUG", "SESEMI_KS_KEY"})
# Trusted under a hardware TEE as well: there the quote covers the pack only as
# part of the measured image, so only the measured path may name it. Under the
# sim backend /init may name a mounted pack: the simulated measurement covers
# the manifest digest of the pack actually loaded (docs/protocol.md, "/init").
TRUSTED_ENV_HW = frozenset({"SESEMI_PACK"})
KNOWN_ENV = frozenset(_ENV.values())
# The invoker adds these to /init's env (ContainerProxy.initializeAndRun in
# apache/openwhisk: "__OW_" + activation fields, and __OW_API_KEY unless the
# action says provide-api-key=false). Accepted and ignored.
PLATFORM_ENV_PREFIX = "__OW_"
_MAX_THREADS = 256


@dataclass(frozen=True)
class ActionConfig:
    ks_url: str = ""
    pack_path: str = ""
    tee: str = "sim"
    key_ttl_s: float = 60.0
    pool_size: int = 0                # 0: one interpreter per core
    interp_threads: int = 1
    memory_budget_mb: int = 2048      # decrypted models kept loaded (LRU)
    insecure_sim_debug: bool = False  # sim evidence claims a debug enclave (tests)
    # The pinned key service's response-signing key (hex), measured: with it the
    # enclave accepts key releases only from that service, fresh. Required for occlum.
    ks_key: str = ""
    # Seconds one request may spend on the key service (sesemi/timeouts.py), then a
    # retryable refusal. Not measured: it can only make the action refuse sooner.
    ks_budget_s: float = 5.0

    def with_untrusted_env(self, env: Mapping[str, Any]) -> "ActionConfig":
        """Apply /init's value.env: the untrusted platform's settings."""
        unknown = sorted(k for k in env if k not in KNOWN_ENV and not str(k).startswith(PLATFORM_ENV_PREFIX))
        if unknown:
            # A typo, or settings smuggled in through an invocation's parameters:
            # refuse rather than run with a setting silently ignored.
            raise FormatError(f"/init env: unknown setting(s) {', '.join(map(repr, unknown[:5]))}; known: "
                              f"{', '.join(sorted(KNOWN_ENV - TRUSTED_ENV))} (and the platform's __OW_*)")
        env = {k: v for k, v in env.items() if not k.startswith(PLATFORM_ENV_PREFIX)}
        refused = sorted((TRUSTED_ENV | (TRUSTED_ENV_HW if self.tee != "sim" else frozenset())) & set(env))
        if refused:
            raise AccessDenied(f"{', '.join(refused)}: trusted setting(s), taken only from the enclave's "
                               "measured configuration, not from /init")
        return self.with_env(env)

    def with_env(self, env: Mapping[str, Any]) -> "ActionConfig":
        changes: dict[str, Any] = {}
        for f in fields(self):
            name = _ENV[f.name]
            if name in env and env[name] not in (None, ""):
                raw = env[name]
                if not isinstance(raw, (str, int, float, bool)):
                    raise FormatError(f"setting {name}: expected a string")
                try:
                    if f.type == "bool":
                        changes[f.name] = str(raw).lower() in ("1", "true", "yes")
                    elif f.type == "int":
                        changes[f.name] = int(raw)
                    elif f.type == "float":
                        changes[f.name] = float(raw)
                    else:
                        changes[f.name] = str(raw)
                except ValueError:
                    raise FormatError(f"setting {name}: not a valid {f.type}") from None
        return replace(self, **changes)

    @classmethod
    def from_environ(cls) -> "ActionConfig":
        return cls().with_env(os.environ)

    def effective_pool_size(self) -> int:
        return self.pool_size if self.pool_size > 0 else max(1, os.cpu_count() or 1)

    def trusted(self) -> dict[str, Any]:
        return action_trusted_config(tee=self.tee, key_ttl_s=self.key_ttl_s,
                                     insecure_sim_debug=self.insecure_sim_debug, ks_key=self.ks_key)

    def validate(self) -> None:
        """Every setting, before anything starts: a refusal names the setting,
        and a refused /init leaves the action free to take a corrected one."""
        if not self.ks_url:
            raise FormatError("no key-service URL: set SESEMI_KS_URL (or --ks)")
        for url in self.ks_url.split(","):  # the key service's replicas, tried in order
            _check_url(url.strip())
        if not self.pack_path:
            raise FormatError("no model pack: set SESEMI_PACK (or --pack)")
        if not os.path.isfile(self.pack_path):
            raise FormatError(f"SESEMI_PACK: {self.pack_path!r} is not a file (a model pack built by `sesemi pack`)")
        if not 0 <= self.pool_size <= _MAX_THREADS:
            raise FormatError(f"SESEMI_POOL_SIZE: must be 0 (one per core) .. {_MAX_THREADS}")
        if not 1 <= self.interp_threads <= _MAX_THREADS:
            raise FormatError(f"SESEMI_INTERP_THREADS: must be 1 .. {_MAX_THREADS}")
        if self.memory_budget_mb < 1:
            raise FormatError("SESEMI_MEMORY_BUDGET_MB: must be at least 1")
        check_tee_name(self.tee)
        if self.ks_key and (len(self.ks_key) != 64 or any(c not in "0123456789abcdefABCDEF" for c in self.ks_key)):
            raise FormatError("SESEMI_KS_KEY: expected the key service's 32-byte signing key in hex")
        if self.tee != "sim" and not self.ks_key:
            raise FormatError("a hardware action must pin its key service: set SESEMI_KS_KEY in the measured "
                              "configuration (the signing key `sesemi ks attest` printed)")
        if not 0 < self.key_ttl_s <= 3600:
            raise FormatError("key TTL must be in (0, 3600] seconds")
        if not 0 < self.ks_budget_s <= 60:
            raise FormatError("SESEMI_KS_BUDGET: must be in (0, 60] seconds (OpenWhisk's default activation "
                              "limit is 60 s)")


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a malformed or out-of-range port
    except ValueError:
        raise FormatError(f"SESEMI_KS_URL: not a valid URL: {url[:100]!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FormatError(f"SESEMI_KS_URL: expected http(s)://HOST[:PORT], got {url[:100]!r}")
    if port == 0:
        raise FormatError("SESEMI_KS_URL: port 0")
