import type { AppserviceRegistry } from '../appservice/registration.ts';
import type { Config } from '../config/config.ts';
import type { Logger } from '../logger.ts';
import type { AccountsService } from './accounts.ts';
import type { Counters } from '../metrics/counters.ts';
import type { DehydratedDevices } from './dehydrated-devices.ts';
import type { DeviceLists } from './device-lists.ts';
import type { KeysService } from './keys.ts';
import type { FiltersService } from './filters.ts';
import type { Notifier } from '../runtime/notifier.ts';
import type { RateLimiter } from '../shared/rate-limiter.ts';
import type { ToDeviceSyncService } from './sync.ts';
import type { ToDeviceService } from './to-device.ts';

/** Everything the HTTP layer may call. */
export interface Services {
  config: Config;
  log: Logger;
  counters: Counters;
  notifier: Notifier;
  accounts: AccountsService;
  toDevice: ToDeviceService;
  toDeviceSync: ToDeviceSyncService;
  filters: FiltersService;
  appservices: AppserviceRegistry;
  sendToDeviceLimiter: RateLimiter;
  keys: KeysService;
  deviceLists: DeviceLists;
  keysClaimLimiter: RateLimiter;
  dehydratedDevices: DehydratedDevices;
}
