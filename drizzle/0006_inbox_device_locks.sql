-- For each device in p_devices (a JSON array of {"u": user ID, "d": device ID}), the newest
-- message it has queued (0: none).
--
-- An enqueue calls this in the statement that locks the devices, for the devices with a
-- long-poll waiting in its process (see NewMessages), and passes the number of rows it locked as
-- p_locks_taken: an argument computed from the locking CTE, so the locks are all held before the
-- call. It is a function because the read must come after the locks: a statement reads from its
-- own snapshot, taken before any wait for a lock, and would miss what the lock's holder committed
-- meanwhile. Each statement of a volatile function takes a new snapshot, so this one sees every
-- message committed for these devices before the locks were ours (stream ids are drawn under
-- the same locks).
CREATE FUNCTION inbox_newest_after_lock(p_devices jsonb, p_locks_taken bigint)
RETURNS TABLE (user_id text, device_id text, newest_stream_id bigint)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  RETURN QUERY
  SELECT k.u, k.d, coalesce((SELECT max(i.stream_id) FROM device_inbox i WHERE i.user_id = k.u AND i.device_id = k.d), 0)::bigint
  FROM jsonb_to_recordset(p_devices) AS k(u text, d text);
END
$$;
