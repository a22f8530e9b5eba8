"""Support for running SeSeMI on one machine: the demo, the tests, the
benchmarks and the Occlum SIM pipeline stand on it, as Flask's own tests and
its users' stand on `flask.testing`. Nothing in the product's servers imports
it; the CLI imports it only for `sesemi demo` (docs/development.md, "Test
support").

- `processes`: start the key service, the action, the emulator and the router
  as real processes on loopback and wait until they answer.
- `world`: `LocalWorld`, a whole deployment driven through the SDK.
- `openwhisk_local`: the local OpenWhisk emulator, action pools, routers and
  the router front end.
- `postgres`: a throw-away PostgreSQL server (Debian's package).
- `reference`: the owner's plaintext reference run of a model.
"""
