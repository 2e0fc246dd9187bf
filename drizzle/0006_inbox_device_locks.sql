-- For each given device (p_users[i], p_devices[i]), the newest message it has queued (0: none).
--
-- An enqueue calls this on the devices it has just locked, in the same statement, for the
-- devices with a long-poll waiting in its process (see NewMessages). It is a function because the
-- read must come after the locks: a statement reads from its own snapshot, taken before any wait
-- for a lock, and would miss what the lock's holder committed meanwhile. Each statement of a
-- volatile function takes a new snapshot, so this one sees every message committed for these
-- devices before the locks were ours (stream ids are drawn under the same locks).
CREATE FUNCTION inbox_newest_after_lock(p_users text[], p_devices text[])
RETURNS TABLE (user_id text, device_id text, newest_stream_id bigint)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  RETURN QUERY
  SELECT k.u, k.d, coalesce((SELECT max(i.stream_id) FROM device_inbox i WHERE i.user_id = k.u AND i.device_id = k.d), 0)::bigint
  FROM unnest(p_users, p_devices) AS k(u, d);
END
$$;
