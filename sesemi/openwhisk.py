"""OpenWhisk's REST API, the subset SeSeMI uses: create/update, get, list and
delete actions; blocking invocation; activation records. One implementation
for `sesemi deploy` and the router; the local emulator (docs/platform.md)
speaks the same API, so only the API host differs.

Credentials are read the way `wsk` reads them: `$WSK_CONFIG_FILE` or
`~/.wskprops`, lines `KEY=VALUE` with APIHOST, AUTH (`user:pass`, HTTP basic
auth) and NAMESPACE. Nothing here ever prints or logs AUTH.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote, urlencode

import urllib3

from .encoding import JSONDecodeError, b64e, json_dumps, json_loads
from .errors import AuthError, Conflict, FormatError, NotFound, UnavailableError
from . import urllib3_errors
from .timeouts import Timeouts, explain

DEFAULT_NAMESPACE = "_"

# Activation outcomes, as OpenWhisk records them in response.status / statusCode.
SUCCESS = "success"
APPLICATION_ERROR = "application error"
DEVELOPER_ERROR = "action developer error"
INTERNAL_ERROR = "whisk internal error"
STATUS_CODES = {SUCCESS: 0, APPLICATION_ERROR: 1, DEVELOPER_ERROR: 2, INTERNAL_ERROR: 3}

# OpenWhisk also allows inner spaces; we refuse them so a name is always one
# URL path segment and one shell word.
_ACTION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_@.\-]{0,255}")
_NAMESPACE = re.compile(r"_|[A-Za-z0-9_][A-Za-z0-9_@.\-]{0,255}")

from .openwhisk_limits import CONCURRENCY as CONCURRENCY  # noqa: E402  (re-exported)
from .openwhisk_limits import DEFAULT_ACTION_THREADS as DEFAULT_ACTION_THREADS  # noqa: E402
from .openwhisk_limits import MEMORY_MB as MEMORY_MB  # noqa: E402
from .openwhisk_limits import TIMEOUT_MS as TIMEOUT_MS  # noqa: E402


class PayloadTooLarge(FormatError):
    """The platform refused an invocation's size (OpenWhisk: 1 MiB by default)."""

    http_status = 413


def check_action_name(name: object) -> str:
    if not isinstance(name, str) or not _ACTION_NAME.fullmatch(name):
        raise FormatError("action name must be 1..256 chars of [A-Za-z0-9_@.-], not starting with [@.-]")
    return name


def check_namespace(ns: object) -> str:
    if not isinstance(ns, str) or not _NAMESPACE.fullmatch(ns):
        raise FormatError("namespace must be '_' or 1..256 chars of [A-Za-z0-9_@.-]")
    return ns


def normalize_apihost(apihost: str) -> str:
    """`wsk` accepts a bare host (meaning https); we keep an explicit scheme."""
    host = apihost.strip().rstrip("/")
    if not host:
        raise FormatError("empty OpenWhisk API host")
    if "://" not in host:
        host = "https://" + host
    if not host.startswith(("http://", "https://")):
        raise FormatError("OpenWhisk API host must be an http(s) URL")
    return host


def parse_wskprops(text: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        props[key.strip().upper()] = value.strip()
    return props


def wskprops_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("WSK_CONFIG_FILE") or Path.home() / ".wskprops")


@dataclass(frozen=True)
class Credentials:
    apihost: str
    auth: str = field(repr=False)
    namespace: str = DEFAULT_NAMESPACE
    source: str = ""

    @property
    def basic(self) -> tuple[str, str]:
        user, sep, password = self.auth.partition(":")
        if not sep or not user:
            raise FormatError(f"OpenWhisk AUTH must be 'user:password' (from {self.source or 'settings'})")
        return user, password


def load_credentials(path: str | Path | None = None, *, apihost: str | None = None, auth: str | None = None,
                     namespace: str | None = None, env: Mapping[str, str] | None = None,
                     require_auth: bool = True) -> Credentials:
    """Explicit values win over the wskprops file, as `wsk --apihost/--auth` win over it."""
    file = Path(path) if path else wskprops_path(env)
    props: dict[str, str] = {}
    if file.is_file():
        props = parse_wskprops(file.read_text(errors="replace"))
    elif path:
        raise FormatError(f"no OpenWhisk properties file at {file}")
    host = apihost or props.get("APIHOST")
    if not host:
        raise FormatError(f"no OpenWhisk API host: set APIHOST in {file} (or $WSK_CONFIG_FILE) or pass --apihost")
    key = auth if auth is not None else props.get("AUTH", "")
    if require_auth and not key:
        raise FormatError(f"no OpenWhisk credentials: set AUTH=user:password in {file} (or $WSK_CONFIG_FILE)")
    creds = Credentials(normalize_apihost(host), key, check_namespace(namespace or props.get("NAMESPACE")
                                                                       or DEFAULT_NAMESPACE), str(file))
    if key:
        creds.basic  # noqa: B018  (validates the shape early, with the file named)
    return creds


def _kv_list(d: Mapping[str, Any], init: bool = False) -> list[dict[str, Any]]:
    return [{"key": k, "value": v, **({"init": True} if init else {})} for k, v in d.items()]


@dataclass(frozen=True)
class ActionSpec:
    """A blackbox action: image and limits. `init_env` becomes parameters marked
    `init: true`, which OpenWhisk passes to the container in /init's value.env
    (the action's settings such as SESEMI_KS_URL); `params` are default
    invocation parameters merged under each activation's value."""

    name: str
    image: str
    memory_mb: int = 256
    timeout_ms: int = 60_000
    concurrency: int = 1
    init_env: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    annotations: Mapping[str, Any] = field(default_factory=dict)

    def validate(self) -> "ActionSpec":
        check_action_name(self.name)
        if not isinstance(self.image, str) or not self.image or any(c.isspace() for c in self.image):
            raise FormatError("image must be a non-empty image reference without spaces")
        for what, value, (lo, hi) in (("memory (MB)", self.memory_mb, MEMORY_MB),
                                      ("timeout (ms)", self.timeout_ms, TIMEOUT_MS),
                                      ("concurrency", self.concurrency, CONCURRENCY)):
            if not isinstance(value, int) or not lo <= value <= hi:
                raise FormatError(f"{what} must be an integer in [{lo}, {hi}]")
        clash = set(self.init_env) & set(self.params)
        if clash:
            raise FormatError(f"parameter(s) set both as init env and as default parameter: {sorted(clash)}")
        return self

    def body(self, namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
        return {
            "namespace": namespace,
            "name": self.name,
            "exec": {"kind": "blackbox", "image": self.image},
            "limits": {"memory": self.memory_mb, "timeout": self.timeout_ms, "concurrency": self.concurrency},
            "parameters": _kv_list(self.init_env, init=True) + _kv_list(self.params),
            # final: an invocation may not override the action's parameters, so a
            # request cannot reach /init's env of a cold container (the controller
            # answers 400, Actions.scala); provide-api-key=false: the action gets
            # no platform credential it has no use for.
            "annotations": _kv_list({"exec": "blackbox", "final": True, "provide-api-key": False,
                                     **self.annotations}),
            "publish": False,
        }


@dataclass(frozen=True)
class Activation:
    activation_id: str
    name: str
    status: str
    result: dict[str, Any]
    start_ms: int
    end_ms: int
    duration_ms: int
    annotations: dict[str, Any]

    @property
    def success(self) -> bool:
        return self.status == SUCCESS

    @property
    def status_code(self) -> int:
        return STATUS_CODES.get(self.status, 3)

    @property
    def wait_ms(self) -> int | None:
        return self.annotations.get("waitTime")

    @property
    def init_ms(self) -> int | None:
        return self.annotations.get("initTime")

    @property
    def cold(self) -> bool:
        """The activation ran /init: OpenWhisk marks it by the initTime
        annotation alone (ContainerProxy.constructWhiskActivation). One that
        waited for a container another activation started carries none; its
        waitTime includes the wait."""
        return "initTime" in self.annotations

    @property
    def error(self) -> str:
        err = self.result.get("error") if isinstance(self.result, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):  # an action's structured error
            return err["message"]
        return str(err) if err is not None else self.status

    @classmethod
    def from_record(cls, rec: Any) -> "Activation":
        if not isinstance(rec, dict) or not isinstance(rec.get("response"), dict):
            raise FormatError("openwhisk: malformed activation record")
        resp = rec["response"]
        status = resp.get("status")
        if status not in STATUS_CODES:
            status = {0: SUCCESS, 1: APPLICATION_ERROR, 2: DEVELOPER_ERROR}.get(resp.get("statusCode"), INTERNAL_ERROR)
        result = resp.get("result")
        if not isinstance(result, dict):
            result = {"error": "the action's result is not a JSON object"} if status == SUCCESS else {}
            if status == SUCCESS:
                status = DEVELOPER_ERROR
        ann: dict[str, Any] = {str(a.get("key")): a.get("value") for a in rec.get("annotations") or [] if isinstance(a, dict)}
        start, end = int(rec.get("start") or 0), int(rec.get("end") or 0)
        return cls(str(rec.get("activationId", "")), str(rec.get("name", "")), status, result, start, end,
                   int(rec.get("duration") or 0) if rec.get("duration") is not None else max(0, end - start), ann)


@dataclass(frozen=True)
class PlannedRequest:
    """A request as `--dry-run` shows it: AUTH is never part of it."""

    method: str
    url: str
    body: Any

    def describe(self) -> str:
        import json

        text = json.dumps(self.body, indent=2, sort_keys=True) if self.body is not None else ""
        return (f"{self.method} {self.url}\nAuthorization: Basic <redacted>\n"
                f"Content-Type: application/json\n\n{text}\n")


def _error_text(resp: urllib3.BaseHTTPResponse) -> str:
    try:
        body = json_loads(resp.data) if resp.data else {}
    except JSONDecodeError:
        body = {}
    msg = body.get("error") if isinstance(body, dict) else None
    return str(msg) if msg else f"HTTP {resp.status}"


class OpenWhiskClient:
    """Thread-safe (the router calls it from many request threads at once):
    one urllib3 pool of kept-alive connections, as the SDK's ActionClient,
    since `requests` costs about as much per call as the crypto does."""

    def __init__(self, creds: Credentials, timeout: float = 75.0, pool_maxsize: int = 64,
                 connect_timeout: float = 5.0, *, insecure: bool = False,
                 cacert: str | os.PathLike[str] | None = None) -> None:
        """`timeout`: the read bound of a call (a blocking invoke waits for the
        activation); `connect_timeout`: the bound on reaching the API host.
        `cacert`: trust this CA bundle (PEM) for the API host, e.g. a
        self-signed deployment's; `insecure`: do not verify its certificate at
        all (`wsk -i`). Both only matter for an https API host."""
        self.creds = creds
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        tls: dict[str, Any] = {}
        if insecure:
            # The caller asked for it and says so on stderr or in its log; urllib3's
            # per-request warning would repeat that on every call.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            tls = {"cert_reqs": "CERT_NONE", "assert_hostname": False}
        elif cacert:
            if not Path(cacert).is_file():
                raise FormatError(f"no CA certificate file at {cacert}")
            tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": os.fspath(cacert)}
        self._pool = urllib3.PoolManager(maxsize=pool_maxsize, retries=False, **tls)
        self._headers = {"Content-Type": "application/json"}
        if creds.auth:
            user, password = creds.basic
            self._headers["Authorization"] = "Basic " + b64e(f"{user}:{password}".encode())

    def url(self, collection: str, name: str | None = None, query: Mapping[str, Any] | None = None) -> str:
        ns = quote(self.creds.namespace, safe="")
        u = f"{self.creds.apihost}/api/v1/namespaces/{ns}/{collection}"
        if name is not None:
            u += "/" + quote(name, safe="")
        if query:
            u += "?" + urlencode({k: (str(v).lower() if isinstance(v, bool) else v) for k, v in query.items()})
        return u

    def _call(self, method: str, url: str, what: str, body: Any = None, timeout: float | None = None,
              ok: tuple[int, ...] = (200,)) -> urllib3.BaseHTTPResponse:
        data = json_dumps(body) if body is not None else None
        t = Timeouts(min(self.connect_timeout, timeout or self.timeout), timeout or self.timeout)
        try:
            resp = self._pool.request(method, url, body=data, headers=self._headers,
                                      timeout=urllib3.Timeout(connect=t.connect_s, read=t.read_s))
        except urllib3.exceptions.SSLError:
            raise UnavailableError(f"{what}: the TLS certificate of {self.creds.apihost} does not verify: trust "
                                   "its CA (deploy --cacert FILE, router openwhisk.cacert) or skip the check "
                                   "(deploy -i, router openwhisk.insecure)") from None
        except urllib3.exceptions.HTTPError as exc:
            raise explain(exc, what, f"OpenWhisk at {self.creds.apihost}", t, bound_of=urllib3_errors.bound_of) from None
        if resp.status in ok:
            return resp
        msg = f"{what}: {_error_text(resp)}"
        status = resp.status
        if status in (401, 403):
            raise AuthError(f"{msg} (check AUTH in {self.creds.source or 'the OpenWhisk settings'})")
        if status == 404:
            raise NotFound(msg)
        if status == 409:
            raise Conflict(msg)
        if status == 413:
            raise PayloadTooLarge(f"{msg} (payload over the platform's limit)")
        if status == 429 or status >= 500:
            raise UnavailableError(msg)
        raise FormatError(msg)

    @staticmethod
    def _json(resp: urllib3.BaseHTTPResponse, what: str) -> Any:
        try:
            return json_loads(resp.data)
        except JSONDecodeError:
            raise UnavailableError(f"{what}: OpenWhisk answered with non-JSON (HTTP {resp.status})") from None

    # -- actions ---------------------------------------------------------------------------------

    def plan_put_action(self, spec: ActionSpec, overwrite: bool = True) -> PlannedRequest:
        spec.validate()
        return PlannedRequest("PUT", self.url("actions", spec.name, {"overwrite": overwrite}),
                              spec.body(self.creds.namespace))

    def put_action(self, spec: ActionSpec, overwrite: bool = True) -> dict[str, Any]:
        req = self.plan_put_action(spec, overwrite)
        return self._json(self._call("PUT", req.url, f"deploy {spec.name}", req.body), "deploy")

    def get_action(self, name: str) -> dict[str, Any]:
        return self._json(self._call("GET", self.url("actions", check_action_name(name)), f"get {name}"), "get")

    def list_actions(self, limit: int = 0, skip: int = 0) -> list[dict[str, Any]]:
        q = {k: v for k, v in (("limit", limit), ("skip", skip)) if v}
        out = self._json(self._call("GET", self.url("actions", None, q), "list actions"), "list")
        if not isinstance(out, list):
            raise UnavailableError("list actions: OpenWhisk answered with something other than a list")
        return out

    def delete_action(self, name: str) -> dict[str, Any]:
        return self._json(self._call("DELETE", self.url("actions", check_action_name(name)), f"delete {name}"),
                          "delete")

    # -- activations -----------------------------------------------------------------------------

    def get_activation(self, activation_id: str) -> Activation:
        resp = self._call("GET", self.url("activations", activation_id), f"activation {activation_id}")
        return Activation.from_record(self._json(resp, "activation"))

    def invoke(self, name: str, params: Mapping[str, Any], *, timeout_s: float | None = None,
               poll_bound_s: float = 60.0) -> Activation:
        """Blocking invocation. Returns the activation whether it succeeded or
        failed (application or developer error); raises only when the platform
        itself refused or could not be reached. A blocking call that outlives
        the platform's wait answers 202 with an id: we then poll the record
        with exponential backoff, within `poll_bound_s`."""
        what = f"invoke {name}"
        url = self.url("actions", check_action_name(name), {"blocking": True})
        resp = self._call("POST", url, what, dict(params), timeout=timeout_s, ok=(200, 202, 500, 502))
        body = self._json(resp, what)
        if resp.status == 202:
            aid = body.get("activationId") if isinstance(body, dict) else None
            if not aid:
                raise UnavailableError(f"{what}: 202 without an activation id")
            return self._poll(str(aid), what, poll_bound_s)
        if isinstance(body, dict) and "activationId" in body and isinstance(body.get("response"), dict):
            return Activation.from_record(body)
        raise UnavailableError(f"{what}: {_error_text(resp)}")

    def _poll(self, aid: str, what: str, bound_s: float) -> Activation:
        deadline = time.monotonic() + bound_s
        delay = 0.01
        while True:
            try:
                return self.get_activation(aid)
            except NotFound:
                pass
            if time.monotonic() + delay > deadline:
                raise UnavailableError(f"{what}: activation {aid} had no result within {bound_s:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
