/** Matrix uses unpadded standard base64; decoders accept padded and URL-safe forms too. */
export function encodeBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64').replace(/=+$/, '');
}

export function decodeBase64(text: string): Buffer | null {
  if (!/^[A-Za-z0-9+/\-_]*={0,2}$/.test(text)) return null;
  return Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}
