/**
 * MSC3944, the one rule this server applies: a key or secret request cancellation
 * (`m.room_key_request` / `m.secret.request`, `action: request_cancellation`) sent to a device
 * that still has the matching request (same sender user, type, `requesting_device_id` and
 * `request_id`) queued and **never carried by any response** removes the request and is not
 * stored itself. Counted in `to_device_stale_dropped_total{type}`, one per message (two per pair).
 *
 * "Never carried" cannot be read off the queue: a row stays queued until the client acknowledges
 * it, and a response may have carried it meanwhile (and a /sync on another connection or process
 * may be carrying it right now). So responses leave a trace, and the two sides meet on row locks:
 *
 * (R) Reading (ToDeviceSyncService, before any response that carries a row of these two types is
 *     sent; /sync and sliding sync both): one statement share-locks those rows, keeps only the
 *     ones that still exist, and records each request's key for the device in
 *     `to_device_request_reads`. Rows that no longer exist are left out of the response.
 * (C) Cancelling (ToDeviceService.storeInTransaction), in one READ COMMITTED transaction that
 *     already holds the target device's row lock (so nothing is queued for it meanwhile, and its
 *     stream ids are in commit order): (1) lock FOR UPDATE the device's queued rows with the
 *     key; (2) in a later statement — a fresh snapshot — delete the key's record, if any; (3) if
 *     there was no record and the newest of those rows are requests, after the last row that is
 *     not one (a cancellation already queued), delete those requests and store nothing;
 *     otherwise store the cancellation as usual.
 *
 * Why a dropped request R was never in a response P: P's statement (R) either locked R before
 * (1) did, or after. After: it waited for (C) to commit, found R deleted, and P left R out.
 * Before: (1) waited for that statement to commit, so (2)'s snapshot sees its record; the record
 * can have gone in between only by a cancellation of the same key for the same device, stored
 * (records are deleted only when a cancellation is stored), committed after the reader and
 * before (C) — but then it is queued after R and is "a row that is not a request" in (3), so R
 * is not dropped. Either way, contradiction. This needs no snapshot of (C) to see the reader's
 * work except (2)'s, taken after the lock wait; READ COMMITTED's row-lock rules (a locked row
 * that was deleted meanwhile is skipped) do the rest. Nothing is kept in memory, so it holds
 * across connections and processes; on PGlite, with one connection, it holds trivially.
 *
 * Why the pair can go without the device missing anything: the record for a key survives the
 * acknowledgement of its request, until a cancellation of it is stored. So "no record" means no
 * request of that key reached the device since the last stored cancellation of it (the spec
 * re-uses a request_id when the same key is requested again): the device's view of the key
 * ends in "cancelled" or "never requested" with or without R and its cancellation.
 *
 * Left alone: users whose messages an appservice also receives (MSC4203; its transactions are a
 * reader outside (R)), and a request and its cancellation in the same group-commit statement
 * (cancellations never are: they take the transaction path). Maintenance forgets a record after
 * {@link REQUEST_READ_RETENTION_DAYS} days only when no request of its key is still queued, so the
 * one assumption is that a request_id is not re-used more than that long after it was delivered.
 */

export const STALE_DROPPED = 'to_device_stale_dropped_total';

/** The event types whose requests and cancellations are paired. */
export const REQUEST_TYPES: ReadonlySet<string> = new Set(['m.room_key_request', 'm.secret.request']);

/** How long a record of a delivered request outlives the request itself (see above). */
export const REQUEST_READ_RETENTION_DAYS = 30;

/** The key a cancellation names, or null when the content is not a well-formed cancellation of one of {@link REQUEST_TYPES}. */
export function cancellationKeyOf(type: string, content: Record<string, unknown>): { requestingDeviceId: string; requestId: string } | null {
  if (!REQUEST_TYPES.has(type) || content.action !== 'request_cancellation') return null;
  const { requesting_device_id: requestingDeviceId, request_id: requestId } = content;
  if (typeof requestingDeviceId !== 'string' || typeof requestId !== 'string') return null;
  return { requestingDeviceId, requestId };
}

/**
 * Which of the rows a response is about to carry are key or secret requests, which must be
 * recorded as read first (DeviceInboxStore.recordRequestsRead); null when none is. Contents are
 * stored as JSON.stringify wrote them, so every `action: request` shows as this substring (a
 * nested one too, which costs a lock and nothing else).
 */
export function requestRowIds(rows: readonly { streamId: number; type: string; content: string }[]): Set<number> | null {
  let requests: Set<number> | null = null;
  for (const r of rows) if (REQUEST_TYPES.has(r.type) && r.content.includes('"action":"request"')) (requests ??= new Set()).add(r.streamId);
  return requests;
}
