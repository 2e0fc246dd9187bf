#!/usr/bin/env bash
# The core delivery tests through PgBouncer in transaction mode (issue 31): each test database is
# reached through the pooler, unprepared, with LISTEN and migrations on the direct connection
# (TEST_DATABASE_POOLER_URL, see test/support/test-database.ts). Skipped without pgbouncer.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v pgbouncer >/dev/null; then
  echo "pgbouncer not installed: the suite through PgBouncer is skipped"
  exit 0
fi
export PGB_DIR="$(mktemp -d)" PGB_PORT="${PGB_PORT:-16432}"
chmod 755 "$PGB_DIR"
trap 'test/support/ha/pgbouncer.sh stop >/dev/null 2>&1 || true; rm -rf "$PGB_DIR"' EXIT
test/support/ha/pgbouncer.sh start
TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
TEST_DATABASE_POOLER_URL="postgres://postgres@127.0.0.1:$PGB_PORT/postgres" \
  npx vitest run test/send-to-device.test.ts test/sync.test.ts test/multi-process.test.ts test/concurrency.test.ts \
    test/wake-with-messages.test.ts test/appservice.test.ts test/federation-inbound.test.ts test/lazy-commits.test.ts \
    test/keys.test.ts test/keys-multi-process.test.ts test/stale-to-device.test.ts test/dehydrated-device.test.ts
