"""Dockerfiles: they parse, stages resolve, and the Occlum stages start the enclave."""

from __future__ import annotations

import io
import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from .bom import Bom, load_bom
from .layout import APPLIANCES, CONFIG_KINDS, Layout
from .occlum_json import env_default

@dataclass
class Stage:
    name: str
    base: str
    instructions: list[dict] = field(default_factory=list)

    def all(self, kind: str) -> list[dict]:
        return [i for i in self.instructions if i["instruction"] == kind]

    def last(self, kind: str) -> dict | None:
        found = self.all(kind)
        return found[-1] if found else None


_KNOWN = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "EXPOSE", "ENTRYPOINT", "CMD", "USER", "LABEL",
          "VOLUME", "SHELL", "STOPSIGNAL", "HEALTHCHECK", "ONBUILD", "COMMENT"}


def parse_dockerfile(path: Path) -> tuple[list[Stage], list[str]]:
    from dockerfile_parse import DockerfileParser

    where = path.name
    out: list[str] = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return [], [f"{where}: missing"]
    df = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    stages: list[Stage] = []
    names: set[str] = set()
    for ins in df.structure:
        kind = ins["instruction"]
        if kind not in _KNOWN:
            out.append(f"{where}:{ins['startline'] + 1}: unknown instruction {kind}")
            continue
        if kind == "COMMENT":
            continue
        if kind == "FROM":
            parts = ins["value"].split()
            parts = [p for p in parts if not p.startswith("--platform")]
            if len(parts) == 3 and parts[1].lower() == "as":
                name = parts[2]
            elif len(parts) == 1:
                name = f"stage{len(stages)}"
            else:
                out.append(f"{where}:{ins['startline'] + 1}: cannot parse FROM {ins['value']!r}")
                continue
            if name in names:
                out.append(f"{where}: stage name {name} used twice")
            names.add(name)
            stages.append(Stage(name, parts[0]))
            continue
        if not stages:
            if kind != "ARG":
                out.append(f"{where}:{ins['startline'] + 1}: {kind} before the first FROM")
            continue
        stages[-1].instructions.append(ins)
        if kind in ("ENTRYPOINT", "CMD") and ins["value"].lstrip().startswith("["):
            try:
                json.loads(ins["value"])
            except json.JSONDecodeError:
                out.append(f"{where}:{ins['startline'] + 1}: {kind} is not valid JSON (exec form)")
    seen: set[str] = set()
    for st in stages:
        for ins in st.all("COPY"):
            m = re.search(r"--from=(\S+)", ins["value"])
            if m and m.group(1) not in seen and "/" not in m.group(1) and ":" not in m.group(1):
                out.append(f"{where}:{ins['startline'] + 1}: COPY --from={m.group(1)}: no earlier stage of that name")
        seen.add(st.name)
    return stages, out


def _copy_parts(ins: dict) -> tuple[dict[str, str], list[str], str]:
    flags: dict[str, str] = {}
    value = ins["value"].strip()
    if value.startswith("["):
        args = json.loads(value)
    else:
        args = value.split()
    rest = []
    for a in args:
        if a.startswith("--") and not rest:
            k, _, v = a[2:].partition("=")
            flags[k] = v
        else:
            rest.append(a)
    return flags, rest[:-1], rest[-1] if rest else ""


def _exec_form(ins: dict | None) -> list[str] | None:
    if ins is None:
        return None
    try:
        v = json.loads(ins["value"])
    except json.JSONDecodeError:
        return None
    return v if isinstance(v, list) and all(isinstance(x, str) for x in v) else None


def _env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage.all("ENV"):
        for m in re.finditer(r'(\w+)=("[^"]*"|\S+)', ins["value"]):
            env[m.group(1)] = m.group(2).strip('"')
    return env


def check_dockerfile(layout: Layout, appliance: str, configs: dict[str, dict] | None = None) -> list[str]:
    """`configs`: kind -> Occlum.json the stages run with (default: the templates)."""
    a = APPLIANCES[appliance]
    path = layout.dockerfile(appliance)
    where = layout.rel(path)
    stages, out = parse_dockerfile(path)
    if not stages:
        return out or [f"{where}: no stages"]
    by = {s.name: s for s in stages}
    if configs is None:
        configs = {k: json.loads(layout.template(appliance, k).read_text()) for k in CONFIG_KINDS}
    bom = load_bom(layout.bom(appliance), [layout.occ / "bom"])
    required = ["builder", a.sim_stage, "runtime"] + (["plain"] if appliance == "action" else [])
    for name in required:
        if name not in by:
            out.append(f"{where}: stage {name!r} is missing")
    if stages[-1].name != "runtime":
        out.append(f"{where}: the last stage (what `docker build` makes by default) must be the production "
                   f"`runtime`, not {stages[-1].name!r}")
    builder = by.get("builder")
    if builder is not None:
        if "occlum/occlum" not in builder.base and not _arg_default(path, builder.base).startswith("occlum/occlum:"):
            out.append(f"{where}: the builder stage must start from the occlum/occlum image")
        if not any("build.sh" in r["value"] for r in builder.all("RUN")):
            out.append(f"{where}: the builder stage never runs occlum_instance/build.sh")
    for name, kind in (("runtime", "prod"), (a.sim_stage, "dev")):
        st = by.get(name)
        if st is None:
            continue
        out += _check_occlum_stage(where, st, appliance, configs[kind], bom)
    plain = by.get("plain")
    if plain is not None:
        out += _check_plain_stage(where, plain, appliance)
    return out


def _arg_default(path: Path, ref: str) -> str:
    m = re.fullmatch(r"\$\{?(\w+)\}?", ref)
    if not m:
        return ref
    for line in path.read_text().splitlines():
        mm = re.match(rf"\s*ARG\s+{m.group(1)}=(\S+)", line)
        if mm:
            return mm.group(1)
    return ref


def _check_exposed(where: str, st: Stage, port: int) -> list[str]:
    ports = {p.split("/")[0] for ins in st.all("EXPOSE") for p in ins["value"].split()}
    return [] if str(port) in ports else [f"{where}: stage {st.name} must EXPOSE {port}"]


def _check_occlum_stage(where: str, st: Stage, appliance: str, config: dict, bom: Bom) -> list[str]:
    a = APPLIANCES[appliance]
    out = _check_exposed(where, st, a.port)
    env = env_default(config)
    if env.get("SESEMI_PORT") != str(a.port):
        out.append(f"{where}: stage {st.name} exposes {a.port} but its Occlum.json sets SESEMI_PORT="
                   f"{env.get('SESEMI_PORT')}")
    argv = _exec_form(st.last("ENTRYPOINT"))
    if not argv:
        return out + [f"{where}: stage {st.name} needs an exec-form ENTRYPOINT"]
    dirs, argv, wrapper = split_entry(argv)
    out += _check_sefs_sources(where, st, config, dirs, wrapper)
    if len(argv) < 3 or posixpath.basename(argv[0]) != "occlum" or argv[1] != "run":
        return out + [f"{where}: stage {st.name}: ENTRYPOINT must be `occlum run PROGRAM ...` (one process in the "
                      f"enclave; got {argv})"]
    if not argv[0].startswith("/"):
        out.append(f"{where}: stage {st.name}: give occlum by its absolute path, not {argv[0]!r}")
    elif st.name == "runtime":
        dests = [_copy_parts(i)[2] for i in st.all("COPY") if "from" in _copy_parts(i)[0]]
        if not any(argv[0] == d or argv[0].startswith(d.rstrip("/") + "/") for d in dests):
            out.append(f"{where}: stage runtime runs {argv[0]} but no COPY --from puts it there")
    prog = argv[2]
    eps = config.get("entry_points", [])
    if not any(prog == e or prog.startswith(e.rstrip("/") + "/") for e in eps):
        out.append(f"{where}: stage {st.name}: {prog} is outside Occlum.json entry_points {eps}")
    e = bom.provides(prog)
    if e is None:
        out.append(f"{where}: stage {st.name}: ENTRYPOINT runs {prog}, which the bom does not put in the image")
    elif e.kind == "link" and bom.provides(e.source) is None:
        out.append(f"{where}: stage {st.name}: {prog} links to {e.source}, which the bom does not put in the image")
    if argv[3:5] != ["-m", a.package]:
        out.append(f"{where}: stage {st.name}: ENTRYPOINT must run `-m {a.package}` (got {argv[3:]})")
    workdir = st.last("WORKDIR")
    if workdir is None:
        out.append(f"{where}: stage {st.name}: set WORKDIR to the Occlum instance (occlum run works there)")
    elif st.name == "runtime":
        dests = [_copy_parts(i)[2].rstrip("/") for i in st.all("COPY")]
        if workdir["value"].rstrip("/") not in dests:
            out.append(f"{where}: stage runtime: WORKDIR {workdir['value']} is not the instance it copies")
    return out


def _check_plain_stage(where: str, st: Stage, appliance: str) -> list[str]:
    a = APPLIANCES[appliance]
    out = _check_exposed(where, st, a.port)
    argv = _exec_form(st.last("ENTRYPOINT"))
    if not argv or argv[-2:] != ["-m", a.package] or posixpath.basename(argv[0]) not in ("python3", "python"):
        return out + [f"{where}: stage plain: ENTRYPOINT must be [python3, -m, {a.package}] (got {argv})"]
    env = _env_of(st)
    pypath = [p for p in env.get("PYTHONPATH", "").split(":") if p]
    dests = [_copy_parts(i) for i in st.all("COPY")]
    if not any(src == [a.package] and posixpath.dirname(dst.rstrip("/")) in pypath for _, src, dst in dests):
        out.append(f"{where}: stage plain: {a.package} is not copied into a PYTHONPATH directory {pypath}")
    if env.get("SESEMI_PORT", str(a.port)) != str(a.port):
        out.append(f"{where}: stage plain: SESEMI_PORT {env.get('SESEMI_PORT')} != EXPOSE {a.port}")
    user = st.last("USER")
    if user is None or user["value"].split(":")[0] in ("root", "0"):
        out.append(f"{where}: stage plain must not run as root")
    return out


# ----------------------------------------------------------------- entry wrapper

ENTRY_WRAPPER = "occlum-entry.sh"   # images/occlum-entry.sh: `DIR... -- COMMAND...`


def split_entry(argv: list[str]) -> tuple[list[str], list[str], str | None]:
    """ENTRYPOINT `[wrapper, DIR..., "--", occlum, run, ...]` -> (dirs, command, wrapper);
    a bare `[occlum, run, ...]` -> ([], argv, None)."""
    if argv and posixpath.basename(argv[0]) != "occlum" and "--" in argv:
        i = argv.index("--")
        return argv[1:i], argv[i + 1:], argv[0]
    return [], argv, None


def _check_sefs_sources(where: str, st: Stage, config: dict, dirs: list[str], wrapper: str | None) -> list[str]:
    """Every SEFS whose source lies outside the instance has that directory created
    before `occlum run`: the LibOS canonicalizes a mount's source and gets None for a
    missing directory (src/libos/src/config.rs), then refuses with "Source is expected
    for SEFS" (src/libos/src/fs/rootfs.rs). A volume or bind mount may lack it."""
    out = []
    sources = [m.get("source") for m in config.get("mount", []) if isinstance(m, dict)
               and m.get("type") == "sefs" and str(m.get("source", "")).startswith("/")]
    for src in sources:
        if posixpath.normpath(src) not in {posixpath.normpath(d) for d in dirs}:
            out.append(f"{where}: stage {st.name}: nothing creates the SEFS source {src} before `occlum run` "
                       f"(Occlum refuses a missing source: \"Source is expected for SEFS\"); start through "
                       f"images/{ENTRY_WRAPPER} with {src} before --")
    if wrapper is not None:
        copied = [(srcs, dst) for flags, srcs, dst in (_copy_parts(i) for i in st.all("COPY"))
                  if "from" not in flags]
        if not any(dst == wrapper and any(posixpath.basename(x) == ENTRY_WRAPPER for x in srcs) for srcs, dst in copied):
            out.append(f"{where}: stage {st.name}: ENTRYPOINT runs {wrapper}, which no COPY of "
                       f"images/{ENTRY_WRAPPER} puts there")
    return out


def check_entry_wrapper(layout: Layout) -> list[str]:
    """images/occlum-entry.sh creates every directory before `--`, then execs the rest."""
    path = layout.images / ENTRY_WRAPPER
    try:
        text = path.read_text()
    except FileNotFoundError:
        used = any(split_entry(_exec_form(st.last("ENTRYPOINT")) or [])[2]
                   for a in APPLIANCES for st in parse_dockerfile(layout.dockerfile(a))[0])
        return [f"{layout.rel(path)}: missing, but an ENTRYPOINT uses it"] if used else []
    code = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    body = "\n".join(code)
    out = []
    if not text.startswith("#!/bin/sh") and not text.startswith("#!/bin/bash"):
        out.append(f"{layout.rel(path)}: needs a #!/bin/sh line (it is an ENTRYPOINT)")
    if not re.search(r'mkdir\s+-p\s+(--\s+)?"\$1"', body) or '"--"' not in body:
        out.append(f"{layout.rel(path)}: must `mkdir -p` each argument before \"--\"")
    if not re.search(r'exec\s+"\$@"', body):
        out.append(f"{layout.rel(path)}: must exec the command after \"--\" (occlum must be PID 1's process)")
    return out


# ----------------------------------------------------------------- runtime packages

# What a stage outside the Occlum image needs before it can start a release enclave,
# as Occlum's runtime image installs it (tools/docker/Dockerfile.ubuntu20.04-rt).
RUNTIME_PACKAGES = {
    "jq": "tools/occlum exports OCCLUM_RELEASE_ENCLAVE=1 only if `jq .metadata.debuggable` prints false; "
          "without jq the PAL creates a debug enclave, which a DisableDebug-signed enclave refuses",
    "libsgx-dcap-quote-verify": "the HW PAL links -lsgx_dcap_quoteverify (src/pal/Makefile)",
    "libsgx-ae-qve": "the quote-verification enclave libsgx-dcap-quote-verify loads",
    "libsgx-dcap-ql": "the HW PAL links -lsgx_dcap_ql (src/pal/Makefile)",
}
_APT_INSTALL = re.compile(r"\bapt(?:-get)?\s+(?:-\S+\s+)*install\b([^&;|]*)")
_SOURCE_WRITE = re.compile(r"https://[^&;]*?(?:>>?|\|\s*tee(?:\s+-a)?)\s*/etc/apt/sources\.list")
_LDD_PAL = re.compile(r"\bldd\s+[^;&|]*libocclum-pal\.so")


def _root_base(stage: Stage, by: dict[str, Stage], path: Path) -> str:
    seen = set()
    while stage.base in by and stage.base not in seen:
        seen.add(stage.base)
        stage = by[stage.base]
    return _arg_default(path, stage.base)


def check_runtime_packages(layout: Layout, appliance: str) -> list[str]:
    """Each stage that runs `occlum run` outside the occlum/occlum image installs
    ca-certificates before any https package source, jq and the DCAP libraries,
    and checks with ldd that the PAL finds its libraries."""
    path = layout.dockerfile(appliance)
    where = layout.rel(path)
    stages, _ = parse_dockerfile(path)
    by = {s.name: s for s in stages}
    out: list[str] = []
    for st in stages:
        argv = split_entry(_exec_form(st.last("ENTRYPOINT")) or [])[1]
        if not argv or posixpath.basename(argv[0]) != "occlum":
            continue
        if _root_base(st, by, path).startswith("occlum/occlum"):
            continue  # Occlum's development image has all of it (tools/docker/Dockerfile.ubuntu20.04)
        installed: set[str] = set()
        ca_ready = False
        for ins in st.instructions:
            kind, value = ins["instruction"], ins["value"]
            line = ins["startline"] + 1
            if kind in ("COPY", "ADD"):
                dst = _copy_parts(ins)[2]
                if dst.startswith("/etc/apt/sources.list") and not ca_ready:
                    out.append(f"{where}:{line}: stage {st.name} adds a package source (Intel's is https) before "
                               f"ca-certificates is installed: the base image has no CA bundle, so apt-get update "
                               f"cannot verify it (Occlum's runtime Dockerfile installs ca-certificates first)")
            elif kind == "RUN":
                installs = [(m.start(), m.group(1).split()) for m in _APT_INSTALL.finditer(value)]
                ca_at = min((pos for pos, pkgs in installs if "ca-certificates" in pkgs), default=None)
                for m in _SOURCE_WRITE.finditer(value):
                    if not ca_ready and (ca_at is None or ca_at > m.start()):
                        out.append(f"{where}:{line}: stage {st.name} writes an https package source before "
                                   f"ca-certificates is installed")
                for _, pkgs in installs:
                    installed.update(p.split("=")[0] for p in pkgs if not p.startswith("-"))
                if ca_at is not None:
                    ca_ready = True
        for pkg, why in RUNTIME_PACKAGES.items():
            if pkg not in installed:
                out.append(f"{where}: stage {st.name} does not install {pkg}: {why}")
        if "ca-certificates" not in installed:
            out.append(f"{where}: stage {st.name} does not install ca-certificates")
        if not any(_LDD_PAL.search(r["value"]) and "not found" in r["value"] for r in st.all("RUN")):
            out.append(f"{where}: stage {st.name} never checks with ldd that libocclum-pal.so finds every library "
                       f"(a missing one fails only at the first start)")
    return out
