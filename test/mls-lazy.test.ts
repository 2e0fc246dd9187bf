import { describe, expect, it } from 'vitest';
import { keyPackageValidation, loadOnce, mlsWire } from '../handlers/mls/lazy.ts';

describe('mls: ts-mls loaded at first use', () => {
  it('loads once and shares the result between concurrent first callers', async () => {
    let loads = 0;
    const get = loadOnce(async () => ({ n: ++loads }));
    const [a, b] = await Promise.all([get(), get()]);
    expect(a).toBe(b);
    expect(await get()).toBe(a);
    expect(loads).toBe(1);
  });

  it('tries again after a failed load instead of failing every later call', async () => {
    let attempt = 0;
    const get = loadOnce(async () => {
      attempt++;
      if (attempt === 1) throw new Error('not there yet');
      return 'loaded';
    });
    await expect(get()).rejects.toThrow('not there yet');
    expect(await get()).toBe('loaded');
    expect(await get()).toBe('loaded');
    expect(attempt).toBe(2);
  });

  it('the real modules load and export what the handlers use', async () => {
    expect(typeof (await mlsWire()).decodeMlsMessageBase64).toBe('function');
    expect(typeof (await keyPackageValidation()).validateKeyPackage).toBe('function');
  });
});
