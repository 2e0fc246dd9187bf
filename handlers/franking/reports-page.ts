import type { ReportStore } from './report-store.ts';

/**
 * One page of verified reports as moderators see them — the same JSON whether asked for over
 * HTTP (`GET …/reports`) or by to-device (`…list_reports`).
 */
export async function reportsPage(store: ReportStore, since: number, limit: number): Promise<Record<string, unknown>> {
  const reports = await store.list(since, limit);
  return {
    reports: reports.map((r) => ({
      report_id: r.id,
      reporter: r.reporterUserId,
      sender: r.sender,
      context: r.context,
      accepted_ts: r.acceptedTs,
      key_version: r.keyVersion,
      message: r.message,
      reason: r.reason,
      received_ts: r.createdTs,
    })),
    // Only a full page may have a next one.
    ...(reports.length === limit ? { next_since: reports.at(-1)?.id } : {}),
  };
}
