#!/usr/bin/env bash
# A session by hand (sim): alice owns the digits model, bob uses it.
# Run it from the repository root after `make demo` (or `make install`) and
# `. .venv/bin/activate`, which puts `sesemi` and the venv's python on PATH.
# Every file it writes goes to $WORK; the servers stop when it ends.
set -euo pipefail
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/sesemi-by-hand.XXXXXX")}
KS_PORT=${KS_PORT:-8443}
ACTION_PORT=${ACTION_PORT:-8080}
KS=http://127.0.0.1:$KS_PORT
mkdir -p "$WORK"
export SESEMI_HOME=$WORK/alice   # alice's keys and pin; bob passes --home "$WORK/bob"
trap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT

wait_for_port() {  # PORT NAME: until the last background server listens; at most 60 s
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 $! 2>/dev/null || { echo "by-hand.sh: $2 exited; see $WORK/$2.log" >&2; return 1; }
    sleep 0.1
  done
  echo "by-hand.sh: $2 did not listen on port $1 within 60 s; see $WORK/$2.log" >&2
  return 1
}

# The key service (simulated attestation; it labels everything it releases so).
sesemi keyservice serve --db "$WORK/ks/ks.db" --port "$KS_PORT" --insecure-sim-attestation \
  > "$WORK/keyservice.log" 2>&1 &
wait_for_port "$KS_PORT" keyservice

# alice, the owner: pin the key service, create and register her identity.
sesemi ks attest "$KS" --insecure-sim
sesemi identity new alice
sesemi ks register --as alice

# bob, the user, with his own home: pin, create, register.
sesemi ks attest "$KS" --insecure-sim --home "$WORK/bob"
BOB=$(sesemi identity new bob --home "$WORK/bob")
sesemi ks register --as bob --home "$WORK/bob"

# alice seals the model, packs it, and publishes its key for the action that
# serves this pack pinned to this key service; then she grants bob.
sesemi model seal models/digits/digits.tflite --model-id digits --out "$WORK/digits.sealed"
sesemi pack build --out "$WORK/models.pack" "$WORK/digits.sealed"
MRENCLAVE=$(sesemi action measure --pack "$WORK/models.pack" --ks-key pinned)
sesemi model publish digits --as alice --allow-mrenclave "$MRENCLAVE"
sesemi grant digits "$BOB" --as alice

# bob enrolls a request key for the model.
sesemi user enroll digits --as bob --home "$WORK/bob"

# The action serves the pack, pinned to the key service alice attested.
sesemi action serve --port "$ACTION_PORT" --pack "$WORK/models.pack" --ks "$KS" --ks-key pinned --init \
  > "$WORK/action.log" 2>&1 &
wait_for_port "$ACTION_PORT" action

# bob's input: the first 8 held-out digits (the .npz also holds their labels y).
python -c "import numpy as np; np.save('$WORK/x.npy', np.load('models/digits/digits_heldout.npz')['x'][:8])"
sesemi infer digits --action "http://127.0.0.1:$ACTION_PORT" --as bob --home "$WORK/bob" \
  --input "$WORK/x.npy" --out "$WORK/y.npz"
python -c "import numpy as np; print('predicted:', *np.load('$WORK/y.npz')['StatefulPartitionedCall:0'].argmax(1))
print('labels:   ', *np.load('models/digits/digits_heldout.npz')['y'][:8])"
sesemi ks audit --as alice --model-id digits --verify
# Her grant's receipt: its leaf is in a checkpoint the key service signed (checked offline).
sesemi ks receipt verify "$(ls "$SESEMI_HOME"/receipts/*-grant.json | head -n 1)"
sesemi ks log checkpoint
echo "files of this session: $WORK"
