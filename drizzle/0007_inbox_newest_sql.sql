-- inbox_newest_after_lock (0006) as an SQL function: the same query without plpgsql's executor.
-- On PGlite (in process, fsync off) the statement of one send to a watched device took 676 µs
-- with the plpgsql function, 589 µs with this one, 477 µs watching nothing. Still VOLATILE, so
-- never inlined into the calling statement nor reading from its snapshot: the query takes a
-- snapshot of its own when it runs, after the caller's locks (see 0006).
CREATE OR REPLACE FUNCTION inbox_newest_after_lock(p_devices jsonb, p_locks_taken bigint)
RETURNS TABLE (user_id text, device_id text, newest_stream_id bigint)
LANGUAGE sql VOLATILE AS $$
  SELECT k.u, k.d, coalesce((SELECT max(i.stream_id) FROM device_inbox i WHERE i.user_id = k.u AND i.device_id = k.d), 0)::bigint
  FROM jsonb_to_recordset(p_devices) AS k(u text, d text)
$$;
