"""copy_bom files: the schema copy_bom parses, and that they put into the image
what the appliance needs at run time."""

from __future__ import annotations

import fnmatch
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

from ..closure import FIRST_PARTY, Closure
from .layout import APPLIANCES, Layout
from .occlum_json import env_default

@dataclass
class BomEntry:
    kind: str            # "dir" (copies the dir itself), "contents" (dir/), "file", "link", "mkdir"
    image: str           # path inside the image
    source: str          # path on the builder ("" for mkdir)
    bom: str             # file it came from
    excludes: tuple[str, ...] = ()


@dataclass
class Bom:
    entries: list[BomEntry] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)

    def provides(self, image_path: str) -> BomEntry | None:
        image_path = posixpath.normpath(image_path)
        for e in self.entries:
            if e.image == image_path:
                return e
        for e in self.entries:
            if e.kind in ("dir", "contents") and image_path.startswith(e.image.rstrip("/") + "/"):
                rel = image_path[len(e.image.rstrip("/")) + 1:]
                if not _excluded(rel, e.excludes):
                    return e
        return None

    def excluded_by(self, image_path: str) -> BomEntry | None:
        for e in self.entries:
            if e.kind in ("dir", "contents") and image_path.startswith(e.image.rstrip("/") + "/"):
                if _excluded(image_path[len(e.image.rstrip("/")) + 1:], e.excludes):
                    return e
        return None


def _excluded(rel: str, patterns: Iterable[str]) -> bool:
    """rsync --exclude: a pattern without '/' matches any path component."""
    parts = rel.split("/")
    for p in patterns:
        if "/" in p.strip("/"):
            if fnmatch.fnmatch(rel, p.strip("/")) or fnmatch.fnmatch(rel, p.strip("/") + "/*"):
                return True
        elif any(fnmatch.fnmatch(c, p.strip("/")) for c in parts):
            return True
    return False


_BOM_KEYS = {"includes": list, "excludes": list, "targets": list}
_TARGET_KEYS = {"target": str, "mkdirs": list, "createlinks": list, "copy": list}
_SOURCE_KEYS = {"from": str, "dirs": list, "files": list}
_FILE_KEYS = {"name": str, "hash": str, "autodep": bool, "rename": str}


def load_bom(top: Path, include_dirs: Iterable[Path] = ()) -> Bom:
    """Parse a copy_bom file and its includes (searched beside the including
    file, then in include_dirs, as copy_bom does), strictly."""
    bom = Bom()
    queue, seen = [top], set()
    dirs = list(include_dirs)
    while queue:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        bom.files.append(path)
        where = str(path.name)
        try:
            doc = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            bom.findings.append(f"{where}: missing")
            continue
        except yaml.YAMLError as exc:
            bom.findings.append(f"{where}: not valid YAML ({exc})")
            continue
        if not isinstance(doc, dict):
            bom.findings.append(f"{where}: a bom file must be a mapping")
            continue
        _strict(doc, _BOM_KEYS, where, bom.findings)
        for inc in doc.get("includes") or []:
            cand = [path.parent / inc] + [d / inc for d in dirs]
            found = next((c for c in cand if c.is_file()), None)
            if found is None:
                bom.findings.append(f"{where}: included bom {inc!r} not found")
            else:
                queue.append(found)
        excludes = tuple(str(x) for x in doc.get("excludes") or [])
        for ti, t in enumerate(doc.get("targets") or []):
            tw = f"{where}: targets[{ti}]"
            if not isinstance(t, dict):
                bom.findings.append(f"{tw}: must be a mapping")
                continue
            _strict(t, _TARGET_KEYS, tw, bom.findings)
            target = t.get("target")
            if not isinstance(target, str) or not target.startswith("/"):
                bom.findings.append(f"{tw}: target must be an absolute path inside the image")
                continue
            bom.entries.append(BomEntry("mkdir", posixpath.normpath(target), "", where))
            for d in t.get("mkdirs") or []:
                bom.entries.append(BomEntry("mkdir", posixpath.normpath(posixpath.join(target, str(d))), "", where))
            for li, link in enumerate(t.get("createlinks") or []):
                if not isinstance(link, dict) or set(link) != {"src", "linkname"}:
                    bom.findings.append(f"{tw}.createlinks[{li}]: needs exactly src and linkname")
                    continue
                bom.entries.append(BomEntry("link", posixpath.normpath(posixpath.join(target, link["linkname"])),
                                            str(link["src"]), where))
            for si, src in enumerate(t.get("copy") or []):
                sw = f"{tw}.copy[{si}]"
                if not isinstance(src, dict):
                    bom.findings.append(f"{sw}: must be a mapping")
                    continue
                _strict(src, _SOURCE_KEYS, sw, bom.findings)
                base = src.get("from", "")
                if "files" not in src and "dirs" not in src:
                    if not base:
                        bom.findings.append(f"{sw}: needs from, dirs or files")
                    else:
                        bom.entries.append(BomEntry("contents", posixpath.normpath(target), base, where, excludes))
                for d in src.get("dirs") or []:
                    d = str(d)
                    if "*" in d:
                        bom.findings.append(f"{sw}: wildcard {d!r} (copy_bom does not expand wildcards)")
                    source = posixpath.join(base, d) if base else d
                    if d.endswith("/"):
                        bom.entries.append(BomEntry("contents", posixpath.normpath(target), source, where, excludes))
                    else:
                        img = posixpath.join(target, posixpath.basename(posixpath.normpath(d)))
                        bom.entries.append(BomEntry("dir", posixpath.normpath(img), source, where, excludes))
                for fi, f in enumerate(src.get("files") or []):
                    if isinstance(f, dict):
                        _strict(f, _FILE_KEYS, f"{sw}.files[{fi}]", bom.findings)
                        name, rename = str(f.get("name", "")), f.get("rename")
                    else:
                        name, rename = str(f), None
                    if not name or "*" in name:
                        bom.findings.append(f"{sw}.files[{fi}]: {name!r} is not a file name")
                        continue
                    img = posixpath.join(target, rename or posixpath.basename(name))
                    bom.entries.append(BomEntry("file", posixpath.normpath(img),
                                                posixpath.join(base, name) if base else name, where))
    return bom


def _strict(obj: dict, keys: dict[str, type], where: str, out: list[str]) -> None:
    for k, v in obj.items():
        if k not in keys:
            out.append(f"{where}: unknown key {k!r} (copy_bom would silently ignore it)")
        elif v is not None and not isinstance(v, keys[k]):
            out.append(f"{where}.{k}: must be a {keys[k].__name__}")


def _norm_entry(name: str) -> str:
    """`_x.cpython-311-x86_64-linux-gnu.so` -> `_x.so`: extension names carry the ABI tag."""
    return re.sub(r"\.(cpython|abi3|pypy)[^/]*\.so$", ".so", name)


def check_bom(layout: Layout, appliance: str, closure: Closure, config: dict, where_config: str) -> list[str]:
    """The bom puts into the image what the appliance imports, where its
    Occlum.json (PYTHONHOME, PYTHONPATH, SESEMI_PACK) expects it."""
    APPLIANCES[appliance]
    top = layout.bom(appliance)
    bom = load_bom(top, [layout.occ / "bom"])
    where = layout.rel(top)
    out = [f"{where} -> {f}" for f in bom.findings]
    if closure.failed:
        out += [f"{appliance}: module fails to import: {f}" for f in closure.failed]
    env = env_default(config)
    home = env.get("PYTHONHOME", "")
    pypath = [p for p in env.get("PYTHONPATH", "").split(":") if p]
    major, minor = closure.version
    stdlib_dir = posixpath.join(home, "lib", f"python{major}.{minor}")
    if not bom.provides(stdlib_dir) or bom.provides(stdlib_dir).kind not in ("dir", "contents"):
        out.append(f"{where}: the standard library {stdlib_dir} (PYTHONHOME of {where_config}) is not copied")
    else:
        for rel, who in sorted(closure.stdlib.items()):
            e = bom.excluded_by(posixpath.join(stdlib_dir, rel))
            if e is not None:
                out.append(f"{where}: {rel} is needed at run time (by {who[0]}) but {e.bom} excludes it")
    for p in pypath:
        e = bom.provides(p)
        if e is None:
            out.append(f"{where}: PYTHONPATH entry {p} is not created by the bom")
    # first-party packages, and nothing of the other appliances
    needed_pkgs = {m.split(".")[0] for m in closure.first_party}
    for pkg in sorted(needed_pkgs):
        hits = [p for p in pypath if (e := bom.provides(posixpath.join(p, pkg))) and e.kind in ("dir", "contents")]
        if not hits:
            out.append(f"{where}: package {pkg} (imported by the {appliance}) is not copied into a PYTHONPATH "
                       f"directory ({', '.join(pypath) or 'none'})")
    for pkg in FIRST_PARTY:
        if pkg in needed_pkgs:
            continue
        for p in pypath:
            if bom.provides(posixpath.join(p, pkg, "__init__.py")):
                out.append(f"{where}: ships {pkg}, which the {appliance} does not use (least code in the enclave)")
    # third-party site-packages entries, compared without ABI tags
    provided = {}
    for e in bom.entries:
        if e.kind in ("dir", "file") and posixpath.dirname(e.image) in pypath:
            provided[_norm_entry(posixpath.basename(e.image))] = e
    for entry, who in sorted(closure.site_entries.items()):
        if _norm_entry(entry) not in provided:
            out.append(f"{where}: {entry} is imported at run time (by {', '.join(sorted(set(who))[:3])}) but no "
                       f"bom copies it into {', '.join(pypath) or 'PYTHONPATH'}")
    needed_norm = {_norm_entry(x) for x in closure.site_entries}
    for name, e in sorted(provided.items()):
        if name not in needed_norm and name not in FIRST_PARTY:
            out.append(f"{e.bom}: copies {name}, which the {appliance} never imports (remove it, or it "
                       f"widens what runs in the enclave)")
    if appliance == "action":
        pack = env.get("SESEMI_PACK", "")
        e = bom.provides(pack)
        if e is None or e.kind != "file":
            out.append(f"{where}: SESEMI_PACK={pack} ({where_config}) is not a file the bom puts in the image")
    return out


# glibc dlopens these to resolve names; copy_bom's autodep follows only DT_NEEDED,
# so Occlum's demos list them (demos/pytorch/distributed/pytorch.yaml copies all three).
OCCLUM_GLIBC_LIB = "/opt/occlum/glibc/lib"
NSS_LIBS = ("libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2")
# Where the boms take the project's own files from inside the builder.
BUILDER_OCC = "/opt/sesemi/src/occlum_instance"


def check_nss(layout: Layout, appliance: str) -> list[str]:
    """The image can resolve host names: the NSS modules and an nsswitch.conf that
    reads the hosts file (the PAL copies the host's in: src/pal/src/pal_api.c)."""
    top = layout.bom(appliance)
    bom = load_bom(top, [layout.occ / "bom"])
    where = layout.rel(top)
    out = []
    for lib in NSS_LIBS:
        img = posixpath.join(OCCLUM_GLIBC_LIB, lib)
        e = bom.provides(img)
        if e is None or e.kind != "file":
            out.append(f"{where}: {img} is not in the image: glibc dlopens it to resolve names and copy_bom's "
                       f"autodep does not follow dlopen, so a PCCS or key service given by name cannot resolve")
    e = bom.provides("/etc/nsswitch.conf")
    if e is None or e.kind != "file":
        return out + [f"{where}: /etc/nsswitch.conf is not in the image (glibc would not read /etc/hosts first)"]
    if e.source.startswith(BUILDER_OCC + "/"):
        src = layout.occ / e.source[len(BUILDER_OCC) + 1:]
        try:
            lines = [ln.split("#", 1)[0].split() for ln in src.read_text().splitlines()]
        except FileNotFoundError:
            return out + [f"{e.bom}: copies {e.source}, which {layout.rel(src)} does not provide"]
        hosts = next((ln[1:] for ln in lines if ln and ln[0] == "hosts:"), [])
        if "files" not in hosts or "dns" not in hosts:
            out.append(f"{layout.rel(src)}: the hosts line must list files and dns (has {hosts})")
    return out
