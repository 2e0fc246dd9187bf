import { MatrixError } from '../errors/matrix-error.ts';
import type { Db } from '../storage/drivers/database.ts';
import { FilterStore } from '../storage/filter-store.ts';

/**
 * Sync filters. Clients upload them before their first sync; we keep and return them but, as
 * this server has no rooms, nothing in a filter changes to-device delivery.
 */
export class FiltersService {
  private readonly store: FilterStore;

  constructor(db: Db) {
    this.store = new FilterStore(db);
  }

  create(userId: string, filter: Record<string, unknown>): Promise<string> {
    return this.store.create(userId, JSON.stringify(filter));
  }

  async get(userId: string, filterId: string): Promise<Record<string, unknown>> {
    const json = await this.store.get(userId, filterId);
    if (json === null) throw new MatrixError('M_NOT_FOUND', 'No such filter');
    return JSON.parse(json) as Record<string, unknown>;
  }

  /** Checks a sync `filter` parameter: inline JSON or the ID of an uploaded filter. */
  async checkSyncParam(userId: string, param: string): Promise<void> {
    if (param.trimStart().startsWith('{')) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(param);
      } catch {
        throw new MatrixError('M_INVALID_PARAM', 'filter is neither a filter ID nor valid JSON');
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
        throw new MatrixError('M_INVALID_PARAM', 'filter must be a JSON object');
      }
      return;
    }
    if ((await this.store.get(userId, param)) === null) {
      throw new MatrixError('M_INVALID_PARAM', `No filter with ID ${JSON.stringify(param)}`);
    }
  }
}
