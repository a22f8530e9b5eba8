"""No plaintext model is put anywhere outside the enclave image."""

from __future__ import annotations

import json
import posixpath

from .bom import load_bom
from .dockerfile import _copy_parts, parse_dockerfile
from .layout import APPLIANCES, CONFIG_KINDS, Layout, MODEL_SUFFIXES

def _is_model_path(p: str) -> bool:
    p = p.strip().strip('"')
    return p.lower().endswith(MODEL_SUFFIXES) or p.rstrip("/") in ("models", "./models") \
        or p.startswith(("models/", "./models/"))


def check_no_plaintext_models(layout: Layout) -> list[str]:
    out: list[str] = []
    for appliance in APPLIANCES:
        path = layout.dockerfile(appliance)
        where = layout.rel(path)
        stages, _ = parse_dockerfile(path)
        for st in stages:
            for ins in st.all("COPY") + st.all("ADD"):
                flags, srcs, dst = _copy_parts(ins)
                line = ins["startline"] + 1
                if ins["instruction"] == "ADD" and any("://" in s for s in srcs):
                    out.append(f"{where}:{line}: ADD from a URL (unverified content in the image)")
                for s in srcs + [dst]:
                    if _is_model_path(s):
                        out.append(f"{where}:{line}: {ins['instruction']} {s}: a plaintext model in the image")
                packs = [s for s in srcs if "PACK" in s]
                if packs and "from" not in flags and st.name != "builder":
                    out.append(f"{where}:{line}: the pack is copied into stage {st.name}; only the builder may "
                               f"take it, into the measured Occlum image")
                if "from" in flags and any(s.startswith("/opt/sesemi/stage") or s.startswith("/opt/sesemi/pack")
                                           for s in srcs):
                    out.append(f"{where}:{line}: copies the staged pack out of the builder, outside the enclave image")
                if st.name == "runtime" and flags.get("from") == "builder":
                    loose = [s for s in srcs if s.rstrip("/").startswith("/opt/sesemi/out")
                             and not s.startswith("/opt/sesemi/out/pkg/")
                             and not s.endswith((".measurement", ".sizing.json"))]
                    if loose:
                        out.append(f"{where}:{line}: the runtime takes {loose} from the builder; only the packaged "
                                   f"instance (/opt/sesemi/out/pkg/...) leaves it (an instance's image/ dir is the "
                                   f"unencrypted file tree)")
            for ins in st.all("VOLUME") + st.all("ENV"):
                if "/opt/sesemi/pack" in ins["value"] and st.name != "builder":
                    out.append(f"{where}:{ins['startline'] + 1}: stage {st.name} exposes the pack path outside "
                               f"the enclave")
        bom = load_bom(layout.bom(appliance), [layout.occ / "bom"])
        for e in bom.entries:
            if e.kind in ("file", "dir") and (_is_model_path(posixpath.basename(e.source)) or
                                              _is_model_path(e.image.lstrip("/").split("/")[-1])):
                out.append(f"{e.bom}: puts a plaintext model ({e.source}) into the image")
        for kind in CONFIG_KINDS:
            try:
                config = json.loads(layout.template(appliance, kind).read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            for m in config.get("mount", []):
                if not isinstance(m, dict) or m.get("type") != "hostfs":
                    continue
                if kind == "prod":
                    continue  # reported by check_config_policy
                for e in bom.entries:
                    if e.image == m.get("target") or e.image.startswith(str(m.get("target")).rstrip("/") + "/"):
                        out.append(f"{layout.rel(layout.template(appliance, kind))}: {e.image} from the bom lies "
                                   f"under the hostfs mount {m.get('target')} (plaintext on the host)")
    build_sh = layout.occ / "build.sh"
    try:
        text = build_sh.read_text()
    except FileNotFoundError:
        return out + [f"{layout.rel(build_sh)}: missing"]
    if "SSMIPACK" not in text:
        out.append(f"{layout.rel(build_sh)}: does not check that --pack is a sealed pack (magic SSMIPACK)")
    return out
