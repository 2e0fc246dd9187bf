-- inbox_newest_after_lock (0007) reads a device's newest message through the (user_id, device_id,
-- stream_id) index whatever the statistics say. Its max(stream_id) under a filter on the device
-- let the planner walk the stream_id primary key backwards instead, filtering rows, once ANALYZE
-- had seen one device holding most of the table: for a device with an empty queue (a parked
-- long-poll's, the usual one to be watched) that walk read the whole table, on every send to it
-- (S2 on PGlite in the bench run on 7df98a8). A row comparison ordered on the index's own columns
-- can be answered only by that index; the first row at or below (device, max) is the device's
-- newest, or another device's when it has none.
CREATE OR REPLACE FUNCTION inbox_newest_after_lock(p_devices jsonb, p_locks_taken bigint)
RETURNS TABLE (user_id text, device_id text, newest_stream_id bigint)
LANGUAGE sql VOLATILE AS $$
  SELECT k.u, k.d, coalesce((
    SELECT CASE WHEN i.user_id = k.u AND i.device_id = k.d THEN i.stream_id END
    FROM device_inbox i
    WHERE (i.user_id, i.device_id, i.stream_id) <= (k.u, k.d, 9223372036854775807)
    ORDER BY i.user_id DESC, i.device_id DESC, i.stream_id DESC
    LIMIT 1
  ), 0)::bigint
  FROM jsonb_to_recordset(p_devices) AS k(u text, d text)
$$;
