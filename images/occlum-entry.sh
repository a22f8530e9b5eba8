#!/bin/sh
# ENTRYPOINT of the Occlum stages that mount a SEFS from outside the instance:
#   sesemi-occlum-entry DIR... -- /opt/occlum/build/bin/occlum run PROGRAM ARGS...
# Creates each DIR (a SEFS source), then execs the command. Occlum resolves a
# mount's source with canonicalize(), which is None for a missing directory
# (src/libos/src/config.rs), and then refuses the mount with "Source is
# expected for SEFS" (src/libos/src/fs/rootfs.rs): a bind mount or a fresh
# volume without the directory would stop the enclave at boot.
set -eu
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
    mkdir -p -- "$1"
    shift
done
if [ "$#" -lt 2 ]; then
    echo "sesemi-occlum-entry: usage: DIR... -- COMMAND [ARGS...]" >&2
    exit 2
fi
shift
exec "$@"
