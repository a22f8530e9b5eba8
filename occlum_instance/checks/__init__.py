"""Static checks for the Occlum appliances and their images.

Every check returns a list of findings (strings naming the file and the
problem); an empty list means the check passed. tests/static runs them on
the committed files, on copies broken on purpose, and on the files as they
were before the Occlum fixes; `python -m occlum_instance.checks` runs them all
and exits non-zero on any finding. docs/occlum.md has the long form.

One module per concern:

* occlum_json: Occlum.json's schema as Occlum's config generator and LibOS parse it;
* policy: what must be measured, what the host may set, production flags;
* memory: memory limits, thread counts and the PAL's TCS reserve (sizing.py);
* bom: copy_bom's schema, the import closure, the NSS modules glibc dlopens;
* dockerfile: stages, entry points, runtime packages (jq, DCAP, CA bundle);
* sealing: the image key and how each writable SEFS is keyed;
* plaintext: no plaintext model outside the enclave image;
* bytecode: the images ship checked-hash .pyc of the appliances' code;
* release_date: the DCAP time floor's release date keeps up with the commits;
* pq_crypto: cryptography comes as a wheel whose OpenSSL has ML-KEM (hybrid HPKE).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..closure import Closure, runtime_closure
from .bytecode import check_bytecode
from .bom import Bom, BomEntry, check_bom, check_nss, load_bom
from .dockerfile import (Stage, _arg_default, check_dockerfile, check_entry_wrapper, check_runtime_packages,
                         parse_dockerfile)
from .layout import APPLIANCES, CONFIG_KINDS, REPO, SECURITY_RELEVANT, Appliance, Layout
from .memory import check_memory, check_rendered, check_tcs_reserve, check_templates, demo_need
from .occlum_json import check_config_schema, env_default
from .plaintext import check_no_plaintext_models
from .pq_crypto import check_all_pq
from .policy import check_code_trusted_settings, check_config_policy, check_env_names_read, check_identity
from .release_date import check_release_date
from .sealing import check_data_sealing, check_image_key

__all__ = ["APPLIANCES", "CONFIG_KINDS", "REPO", "SECURITY_RELEVANT", "Appliance", "Bom", "BomEntry", "Layout",
           "Stage", "check_all", "check_bom", "check_bytecode", "check_code_trusted_settings", "check_config_policy",
           "check_config_schema", "check_data_sealing", "check_dockerfile", "check_entry_wrapper",
           "check_env_names_read", "check_identity", "check_image_key", "check_memory",
           "check_no_plaintext_models", "check_nss", "check_all_pq", "check_release_date", "check_rendered",
           "check_runtime_packages",
           "check_tcs_reserve", "check_templates", "closures", "demo_need", "env_default", "load_bom", "main",
           "parse_dockerfile", "_arg_default"]


def closures() -> dict[str, Closure]:
    return {name: runtime_closure(a.package) for name, a in APPLIANCES.items()}


def check_all(layout: Layout | None = None, cl: dict[str, Closure] | None = None) -> list[str]:
    layout = layout or Layout()
    cl = cl or closures()
    out = check_templates(layout)
    for appliance in APPLIANCES:
        for kind in CONFIG_KINDS:
            try:
                config = json.loads(layout.template(appliance, kind).read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            out += check_bom(layout, appliance, cl[appliance], config, layout.rel(layout.template(appliance, kind)))
        out += check_dockerfile(layout, appliance)
        out += check_runtime_packages(layout, appliance)
        out += check_nss(layout, appliance)
    out += check_entry_wrapper(layout)
    out += check_tcs_reserve(layout)
    out += check_image_key(layout)
    out += check_data_sealing(layout)
    out += check_no_plaintext_models(layout)
    out += check_bytecode(layout)
    out += check_release_date(layout)
    out += check_all_pq(layout)
    code_root = layout.root if (layout.root / "app" / "config.py").is_file() else REPO
    out += check_code_trusted_settings(code_root)
    return list(dict.fromkeys(out))


def main(argv: list[str] | None = None) -> int:
    findings = check_all(Layout(Path(argv[0]) if argv else REPO))
    for f in findings:
        print(f)
    print(f"{len(findings)} finding(s)" if findings else "occlum/image static checks: all passed")
    return 1 if findings else 0
