"""The image key, and how each writable SEFS is keyed.

How Occlum 0.30.1 keys its file systems (the source files named are Occlum's):

* `occlum build --image-key K` zips the image SEFS with K and writes
  `{"image_type": "encrypted"}` into the initfs (tools/occlum_build.mk). Unless
  `--buildin-image-key` is also given, the same makefile deletes
  `initfs/etc/image_key`; the stock init then fails to open `/etc/image_key`
  (tools/init/src/main.rs) and the PAL stops ("The init process exit with
  code", src/pal/src/pal_api.c). The other way to get K is the init-RA flow
  (`occlum new --init-ra`), which replaces that init.
* init passes the image key (or none, for `integrity-only`) to the mount
  syscall; `do_mount_rootfs` hands that one key to every SEFS in Occlum.json,
  the writable layer and `/data` included (src/libos/src/fs/fs_ops/mount.rs,
  src/libos/src/fs/rootfs.rs). SgxStorage then encrypts with that key, and
  only with no key and no MAC does it use the SGX auto key, derived from the
  enclave's MRSIGNER (EncryptMode::EncryptAutoKey in
  src/libos/src/fs/sefs/sgx_storage.rs).

The design (docs/occlum.md, "Sealing"): both images are integrity-only (no
`--image-key`), so the key service's `/data` and both writable layers use the
MRSIGNER auto key: an upgrade signed by the same key opens the old database,
and no key that ships with the image can decrypt it.
"""

from __future__ import annotations

import json
import re
import shlex

from .layout import CONFIG_KINDS, Layout


def occlum_commands(text: str, sub: str) -> list[list[str]]:
    """The argument lists of every `occlum SUB ...` command line in a shell script."""
    found = []
    for ln in text.splitlines():
        if ln.lstrip().startswith("#") or not re.search(rf"\bocclum\s+{sub}\b", ln):
            continue
        try:
            words = shlex.split(ln, comments=True)
        except ValueError:
            words = ln.split()
        i = next((k for k in range(len(words) - 1)
                  if words[k].rsplit("/", 1)[-1] == "occlum" and words[k + 1] == sub), None)
        if i is not None:
            found.append(words[i + 2:])
    return found


def _build_script(layout: Layout) -> tuple[str, str | None]:
    path = layout.occ / "build.sh"
    try:
        return layout.rel(path), path.read_text()
    except FileNotFoundError:
        return layout.rel(path), None


def check_image_key(layout: Layout) -> list[str]:
    """An encrypted image must have a way for init to get its key."""
    where, text = _build_script(layout)
    if text is None:
        return [f"{where}: missing"]
    builds = occlum_commands(text, "build")
    if not builds:
        return [f"{where}: never runs `occlum build`"]
    init_ra = any("--init-ra" in args for args in occlum_commands(text, "new"))
    out = []
    for args in builds:
        if "--image-key" in args and "--buildin-image-key" not in args and not init_ra:
            out.append(f"{where}: `occlum build {' '.join(args)}` encrypts the image but gives init no key: "
                       f"without --buildin-image-key Occlum's build deletes initfs/etc/image_key "
                       f"(tools/occlum_build.mk), init cannot open /etc/image_key (tools/init/src/main.rs) and "
                       f"the enclave never boots; use the init-RA flow (occlum new --init-ra) or no image key")
    return out


def check_data_sealing(layout: Layout) -> list[str]:
    """The key service's persistent SEFS is keyed by the MRSIGNER auto key."""
    where, text = _build_script(layout)
    out: list[str] = []
    if text is not None:
        for args in occlum_commands(text, "build"):
            if "--image-key" in args:
                out.append(f"{where}: `occlum build {' '.join(args)}`: with an image key, init passes that key to "
                           f"every SEFS in Occlum.json (src/libos/src/fs/fs_ops/mount.rs, rootfs.rs), so the key "
                           f"service's /data is encrypted with it, not with the MRSIGNER auto key "
                           f"(src/libos/src/fs/sefs/sgx_storage.rs): a new build cannot open the old database, "
                           f"or, with the key built in, anyone holding the image can")
    for kind in CONFIG_KINDS:
        path = layout.template("keyservice", kind)
        try:
            config = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue  # reported by check_templates
        persistent = [m for m in config.get("mount", []) if isinstance(m, dict) and m.get("type") == "sefs"
                      and m.get("target") != "/"]
        if not persistent:
            out.append(f"{layout.rel(path)}: the key service has no SEFS of its own for its database")
        for m in persistent:
            opts = m.get("options") or {}
            # (a MAC would make it integrity-only: check_config_policy reports that)
            if opts.get("temporary"):
                out.append(f"{layout.rel(path)}: SEFS {m.get('target')} is temporary: created empty at every "
                           f"start (src/libos/src/fs/rootfs.rs), so the database would not survive a restart")
    return out
