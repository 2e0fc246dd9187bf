// Drives a running server that loaded examples/external-module (the counter module): waits for
// it to listen, registers a user, bumps a counter through the server user and reads the reply
// from /sync, then calls the module's route for a counter that exists and one that does not.
// Usage: node smoke-module.mjs <base url> <server name>
const [base, serverName] = process.argv.slice(2);
const api = `${base}/_matrix/client`;

async function waitForServer() {
  for (let i = 0; i < 120; i++) {
    try {
      if ((await fetch(`${api}/versions`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error('the server did not start listening');
}

// JSON objects have no key order (the server stores contents as canonical JSON, keys sorted).
const sorted = (v) => (Array.isArray(v) ? v.map(sorted) : v !== null && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted(v[k])])) : v);

function expectEqual(actual, expected, what) {
  if (JSON.stringify(sorted(actual)) !== JSON.stringify(sorted(expected))) throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

await waitForServer();
const reg = await (await fetch(`${api}/v3/register`, { method: 'POST', body: JSON.stringify({ username: 'smoke', password: 'a long secret', auth: { type: 'm.login.dummy' } }) })).json();
const auth = { Authorization: `Bearer ${reg.access_token}` };
const put = await fetch(`${api}/v3/sendToDevice/org.example.counter.bump/t1`, { method: 'PUT', headers: auth, body: JSON.stringify({ messages: { [`@:${serverName}`]: { '': { name: 'coffee' } } } }) });
expectEqual(put.status, 200, 'sendToDevice to the server user');
const sync = await (await fetch(`${api}/v3/sync`, { headers: auth })).json();
expectEqual(sync.to_device.events, [{ sender: `@:${serverName}`, type: 'org.example.counter.value', content: { name: 'coffee', count: 1 } }], 'the reply in /sync');
const found = await fetch(`${api}/unstable/org.example.counter/counters/coffee`, { headers: auth });
expectEqual([found.status, await found.json()], [200, { name: 'coffee', count: 1 }], 'the route, an existing counter');
const missing = await fetch(`${api}/unstable/org.example.counter/counters/tea`, { headers: auth });
expectEqual([missing.status, missing.headers.get('content-type'), await missing.json()], [404, 'application/json', { errcode: 'M_NOT_FOUND', error: 'No counter named tea' }], "the route's MatrixError");
console.log(`smoke test passed against ${base}`);
