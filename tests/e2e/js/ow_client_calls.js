// The official OpenWhisk JavaScript client (npm `openwhisk`) against the local
// emulator: each call's outcome, printed as one JSON object for the Python test.
// Usage: node ow_client_calls.js APIHOST AUTH
const openwhisk = require('openwhisk')

const [apihost, auth] = process.argv.slice(2)
const opts = { apihost, api_key: auth, namespace: '_', retry: { retries: 0 } }
const ow = openwhisk(opts)
const stranger = openwhisk({ ...opts, api_key: 'nobody:wrong' })

async function outcome (call) {
  try {
    return { ok: true, body: await call() }
  } catch (err) {
    return { ok: false, status: err.statusCode, body: err.error, message: err.message }
  }
}

async function main () {
  const exec = { kind: 'blackbox', image: 'fake' }
  const out = {}
  out.create = await outcome(() => ow.actions.create({ name: 'js1', action: { exec, limits: { memory: 128 } } }))
  out.createAgain = await outcome(() => ow.actions.create({ name: 'js1', action: { exec } }))
  out.getMissing = await outcome(() => ow.actions.get({ name: 'no-such-action' }))
  out.activationMissing = await outcome(() => ow.activations.get({ name: '0'.repeat(32) }))
  out.noAuth = await outcome(() => stranger.actions.list())
  out.badKind = await outcome(() => ow.actions.create({ name: 'js2', action: 'function main() {}', kind: 'nodejs:20' }))
  out.invoke = await outcome(() => ow.actions.invoke({ name: 'js1', blocking: true, params: { echo: 7 } }))
  out.invokeResult = await outcome(() => ow.actions.invoke({ name: 'js1', blocking: true, result: true, params: { echo: 8 } }))
  out.appError = await outcome(() => ow.actions.invoke({ name: 'js1', blocking: true, params: { answer: 'apperr' } }))
  out.list = await outcome(() => ow.activations.list({ name: 'js1', limit: 5 }))
  if (out.invoke.ok) {
    const id = out.invoke.body.activationId
    out.get = await outcome(() => ow.activations.get({ name: id }))
    out.logs = await outcome(() => ow.activations.logs({ name: id }))
    out.result = await outcome(() => ow.activations.result({ name: id }))
  }
  out.update = await outcome(() => ow.actions.update({ name: 'js1', action: { exec, limits: { memory: 256 } } }))
  out.delete = await outcome(() => ow.actions.delete({ name: 'js1' }))
  process.stdout.write(JSON.stringify(out))
}

main().catch(err => { process.stderr.write(String(err && err.stack || err)); process.exit(1) })
