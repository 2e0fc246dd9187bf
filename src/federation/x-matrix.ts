/**
 * The `Authorization: X-Matrix …` header of server-server requests (spec "Request
 * Authentication"): comma-separated auth-params, values quoted or bare, in any order.
 */
export interface XMatrixAuth {
  origin: string;
  destination: string | null;
  key: string;
  sig: string;
}

export function parseXMatrix(header: string): XMatrixAuth | null {
  const match = /^X-Matrix\s+(.*)$/is.exec(header.trim());
  if (match === null) return null;
  const params = new Map<string, string>();
  const rest = match[1] ?? '';
  let i = 0;
  while (i < rest.length) {
    while (i < rest.length && /[\s,]/.test(rest[i] ?? '')) i++;
    const eq = rest.indexOf('=', i);
    if (eq < 0) break;
    const name = rest.slice(i, eq).trim().toLowerCase();
    i = eq + 1;
    let value = '';
    if (rest[i] === '"') {
      i++;
      while (i < rest.length && rest[i] !== '"') {
        if (rest[i] === '\\' && i + 1 < rest.length) i++;
        value += rest[i];
        i++;
      }
      if (rest[i] !== '"') return null;
      i++;
    } else {
      const end = rest.indexOf(',', i);
      value = (end < 0 ? rest.slice(i) : rest.slice(i, end)).trim();
      i = end < 0 ? rest.length : end;
    }
    if (name === '' || params.has(name)) return null;
    params.set(name, value);
  }
  const origin = params.get('origin');
  const key = params.get('key');
  const sig = params.get('sig');
  if (origin === undefined || key === undefined || sig === undefined || origin === '' || key === '' || sig === '') return null;
  return { origin, destination: params.get('destination') ?? null, key, sig };
}

export function formatXMatrix(auth: { origin: string; destination: string; key: string; sig: string }): string {
  const q = (v: string) => `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
  return `X-Matrix origin=${q(auth.origin)},destination=${q(auth.destination)},key=${q(auth.key)},sig=${q(auth.sig)}`;
}
