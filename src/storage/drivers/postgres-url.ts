/**
 * The URL as postgres.js 3.4 should see it. With several hosts (`postgres://a:5432,b:5432/db`)
 * libpq's `target_session_attrs=read-write` means "a server that accepts writes", which is what
 * operators write. postgres.js tests `read-write` by `default_transaction_read_only` alone, and a
 * hot standby reports that as off (read-only comes from recovery, not from that setting), so it
 * connects to the standby and every write fails. Its `primary` tests recovery
 * (`in_hot_standby`/`pg_is_in_recovery()`), which is what `read-write` means in libpq.
 */
export function postgresJsUrl(url: string): string {
  return url.replace(/([?&]target_session_attrs=)read-write(?=&|$)/, '$1primary');
}
