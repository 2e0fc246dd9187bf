import { createHash, randomBytes } from 'node:crypto';

/** 256 random bits; the prefix makes leaked tokens recognisable to secret scanners. */
export function newAccessToken(): string {
  return `mtd_${randomBytes(32).toString('base64url')}`;
}

/** Tokens are stored only as this hash, so a database leak does not leak sessions. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('base64url');
}

const DEVICE_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';

export function newDeviceId(): string {
  const bytes = randomBytes(10);
  return Array.from(bytes, (b) => DEVICE_ALPHABET[b % DEVICE_ALPHABET.length]).join('');
}

export function newOpaqueId(bytes = 18): string {
  return randomBytes(bytes).toString('base64url');
}
