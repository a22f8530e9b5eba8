"""The crypto library behind the hybrid HPKE suite (MLKEM768-X25519).

`cryptography` >= 47 implements that suite through the OpenSSL it links; only
an OpenSSL with ML-KEM (>= 3.5, or AWS-LC) provides it. Its wheels carry such
an OpenSSL; a build from source links the base image's (Ubuntu 20.04: 1.1.1,
no ML-KEM), and the appliance would then refuse to start
(sesemi/hpke_box.py check_backend). So every image stage that installs the
dependencies takes `cryptography` as a wheel only, and checks ML-KEM before
the image is finished; and pyproject.toml asks for a version that has the suite.
"""

from __future__ import annotations

import re

from .dockerfile import parse_dockerfile
from .layout import APPLIANCES, REPO, Layout

MIN_CRYPTOGRAPHY = (47,)
_PIP = re.compile(r"pip\W+install")
_ONLY_BINARY = re.compile(r"--only-binary(\W+|=)(:all:|[\w,-]*cryptography)")


def check_pq_crypto(layout: Layout, appliance: str) -> list[str]:
    path = layout.dockerfile(appliance)
    where = layout.rel(path)
    stages, _ = parse_dockerfile(path)
    out = []
    for st in stages:
        runs = [i["value"] for i in st.all("RUN")]
        installs = [r for r in runs if _PIP.search(r) and "requirements.txt" in r]
        if not installs:
            continue
        if not all(_ONLY_BINARY.search(r) for r in installs):
            out.append(f"{where}: stage {st.name} may build cryptography from source (no `--only-binary "
                       "cryptography`): it would link the base image's OpenSSL, which lacks ML-KEM")
        if not any("mlkem_supported()" in r and "MLKEM768_X25519" in r for r in runs):
            out.append(f"{where}: stage {st.name} does not check that cryptography's OpenSSL has ML-KEM and "
                       "the MLKEM768-X25519 HPKE KEM (the image would fail at start, not at build)")
    return out


def check_pyproject_crypto(layout: Layout) -> list[str]:
    path = layout.root / "pyproject.toml"
    if not path.is_file():
        path = REPO / "pyproject.toml"
    m = re.search(r'"cryptography\s*>=\s*([\d.]+)', path.read_text())
    if m is None or tuple(int(x) for x in m.group(1).split(".")) < MIN_CRYPTOGRAPHY:
        return [f"pyproject.toml: cryptography must be >= {'.'.join(map(str, MIN_CRYPTOGRAPHY))} (HPKE with "
                "MLKEM768-X25519)"]
    return []


def check_all_pq(layout: Layout) -> list[str]:
    out = check_pyproject_crypto(layout)
    for appliance in APPLIANCES:
        out += check_pq_crypto(layout, appliance)
    return out
