#!/usr/bin/env bash
# The module SDK as a module author and an operator meet it, outside this checkout:
#  1. `npm pack` the server (prepack builds it), as the registry would serve it;
#  2. a fresh folder holding examples/external-module installs that tarball with a plain
#     `npm install` (drizzle-orm and valibot are the server's peers: one copy of each), then
#     type-checks, runs its tests on the test kit and packs itself;
#  3. a production server installed from the tarball loads the module by package name, then by
#     path, and .ci/smoke-module.mjs drives each over HTTP: a bump to the server user answered in
#     /sync, and the module's route answering its MatrixError as a Matrix 404;
#  4. a server run from this checkout (`npm start`'s command) loads it by package name too.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tds-packed-XXXXXX")
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== npm pack (prepack builds)"
npm pack --silent --pack-destination "$WORK" >/dev/null
SERVER_TGZ=$(ls "$WORK"/matrix-to-device-server-*.tgz)

echo "== the example module in a fresh folder, the server from the tarball"
mkdir "$WORK/module"
(cd examples/external-module && tar cf - --exclude=node_modules --exclude=dist --exclude=package-lock.json --exclude=.npmrc .) | (cd "$WORK/module" && tar xf -)
(
  cd "$WORK/module"
  npm pkg set "devDependencies.matrix-to-device-server=file:$SERVER_TGZ"
  npm install --no-audit --no-fund --prefer-offline
  # One copy of each shared library: the server's peers are the module's.
  [ "$(find node_modules -name package.json -path '*/drizzle-orm/package.json' -not -path '*/drizzle-orm/*/*' | wc -l)" = 1 ]
  [ "$(find node_modules -name package.json -path '*/valibot/package.json' -not -path '*/valibot/*/*' | wc -l)" = 1 ]
  npm run typecheck
  npm test
  npm pack --silent --pack-destination "$WORK" >/dev/null
)
MODULE_TGZ=$(ls "$WORK"/matrix-to-device-counter-*.tgz)

echo "== a production server installed from the tarball"
mkdir "$WORK/server"
cd "$WORK/server"
printf '{"name":"deployment","private":true,"type":"module"}\n' > package.json
npm install --no-audit --no-fund --prefer-offline "$SERVER_TGZ" "$MODULE_TGZ"

PORT=18648
for spec in matrix-to-device-counter ../module; do
  echo "== loading the module as \"$spec\""
  rm -rf data
  printf 'server_name: localhost:%s\nlisten: { port: %s }\nmetrics: { enabled: false }\nfederation: { enabled: false }\nhandlers:\n  - module: ping\n  - module: %s\n    config: { max_name_length: 32 }\n' "$PORT" "$PORT" "$spec" > config.yaml
  CONFIG_FILE=config.yaml LOG_FORMAT=json node node_modules/matrix-to-device-server/dist/src/main.js 2> server.log &
  SERVER_PID=$!
  if ! node "$ROOT/.ci/smoke-module.mjs" "http://127.0.0.1:$PORT" "localhost:$PORT"; then
    cat server.log >&2
    exit 1
  fi
  kill "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=
done
# The same module by package name into a server run from this checkout (`npm start`'s command):
# the folder the server starts in gets the module's package with --legacy-peer-deps, and links
# to the checkout and its drizzle-orm and valibot where a registry install would put them.
echo "== loading the module by package name into a server run from the checkout"
mkdir "$WORK/from-checkout"
cd "$WORK/from-checkout"
printf '{"name":"deployment","private":true,"type":"module"}\n' > package.json
npm install --no-audit --no-fund --prefer-offline --legacy-peer-deps "$MODULE_TGZ"
ln -s "$ROOT" node_modules/matrix-to-device-server
ln -s "$ROOT/node_modules/drizzle-orm" node_modules/drizzle-orm
ln -s "$ROOT/node_modules/valibot" node_modules/valibot
printf 'server_name: localhost:%s\nlisten: { port: %s }\nmetrics: { enabled: false }\nfederation: { enabled: false }\nhandlers:\n  - module: matrix-to-device-counter\n' "$PORT" "$PORT" > config.yaml
CONFIG_FILE=config.yaml LOG_FORMAT=json node --conditions=matrix-to-device-source --import "file://$ROOT/node_modules/tsx/dist/loader.mjs" "$ROOT/src/main.ts" 2> server.log &
SERVER_PID=$!
if ! node "$ROOT/.ci/smoke-module.mjs" "http://127.0.0.1:$PORT" "localhost:$PORT"; then
  cat server.log >&2
  exit 1
fi
kill "$SERVER_PID"
wait "$SERVER_PID" || true
SERVER_PID=
echo "== packed module: OK"
