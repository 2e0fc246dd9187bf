import { hash, randomBytes } from 'node:crypto';

/** 256 random bits; the prefix makes leaked tokens recognisable to secret scanners. */
export function newAccessToken(): string {
  return `mtd_${randomBytes(32).toString('base64url')}`;
}

/**
 * Tokens are stored only as this hash, so a database leak does not leak sessions. Every request
 * hashes its token: the one-shot `hash` makes no Hash object (a few µs less per request).
 */
export function hashToken(token: string): string {
  return hash('sha256', token, 'base64url');
}

const DEVICE_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';

export function newDeviceId(): string {
  const bytes = randomBytes(10);
  return Array.from(bytes, (b) => DEVICE_ALPHABET[b % DEVICE_ALPHABET.length]).join('');
}

export function newOpaqueId(bytes = 18): string {
  return randomBytes(bytes).toString('base64url');
}
