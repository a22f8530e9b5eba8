"""The images ship the appliances' bytecode, compiled with checked-hash
invalidation.

Why: with PYTHONDONTWRITEBYTECODE=1 and no .pyc, every start compiles every
module of the appliance (docs/performance.md, "Cold start"). Why checked-hash:
copy_bom copies with `rsync -a` (occlum/occlum tools/copy_bom/README.md), but
a timestamp .pyc is only as good as the mtimes every later step keeps, and an
unchecked-hash .pyc would keep running after its .py changed, so after an
edit or an upgrade the code that runs could differ from the code
`sesemi.measure` hashes under sim. A checked-hash .pyc is used only while the
SipHash of its source matches (CPython's importlib/_bootstrap_external.py,
`_validate_hash_pyc`); a stale one is recompiled from the .py.

What this does not do: SipHash with CPython's public key ties the .pyc to its
source's hash, not its bytecode to its source, so a forged .pyc carrying a
genuine header would run. In an Occlum image that forgery is an edit of the
integrity-protected image, which changes MRENCLAVE; under sim, which trusts
the host by definition, nothing stops it (nor an edited .py).
"""

from __future__ import annotations

import re

from .bom import load_bom
from .dockerfile import _exec_form, parse_dockerfile
from .layout import APPLIANCES, Layout

_COMPILE = re.compile(r"-m\s+compileall\b[^\n]*--invalidation-mode\s+checked-hash")
_CODE_PACKAGES = ("sesemi", "app", "keyservice")


def check_bytecode(layout: Layout) -> list[str]:
    out: list[str] = []
    build = layout.occ / "build.sh"
    text = build.read_text() if build.is_file() else ""
    clean = text.find("-name __pycache__ -prune -exec rm -rf")
    compiled = _COMPILE.search(text)
    if not compiled:
        out.append(f"{layout.rel(build)}: does not compile the code with "
                   "`python -m compileall --invalidation-mode checked-hash`")
    elif clean >= 0 and compiled.start() < clean:
        out.append(f"{layout.rel(build)}: compiles the code before removing the copied __pycache__, "
                   "so the builder's own .pyc would ship")
    for appliance in APPLIANCES:
        bom = load_bom(layout.bom(appliance), [layout.occ / "bom"])
        for e in bom.entries:
            name = e.image.rstrip("/").rsplit("/", 1)[-1]
            if e.kind in ("dir", "contents") and name in _CODE_PACKAGES and bom.excluded_by(
                    f"{e.image.rstrip('/')}/__pycache__/x.pyc"):
                out.append(f"{e.bom}: excludes __pycache__ from {e.image}: the compiled code "
                           "build.sh makes would not reach the image")
    stages, _ = parse_dockerfile(layout.dockerfile("action"))
    for st in stages:
        if st.name != "plain":
            continue
        runs = " ".join(" ".join(_exec_form(i) or [i["value"]]) for i in st.all("RUN"))
        if not _COMPILE.search(runs):
            out.append(f"{layout.rel(layout.dockerfile('action'))}: stage plain does not compile the code "
                       "with compileall --invalidation-mode checked-hash")
    return out
