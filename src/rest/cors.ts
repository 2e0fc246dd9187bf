/** The headers the Matrix spec (client-server API, "Web Browser Clients") asks for on every response. */
export const CORS_HEADERS: Readonly<Record<string, string>> = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, HEAD, POST, PUT, DELETE, OPTIONS',
  'Access-Control-Allow-Headers': 'X-Requested-With, Content-Type, Authorization',
};

/** Web clients (Element, matrix-js-sdk in a browser) need CORS on every Matrix endpoint. */
function isMatrixPath(path: string): boolean {
  return path === '/_matrix' || path.startsWith('/_matrix/');
}

/**
 * The answer to a CORS preflight (204; its headers come from corsHeaders), which no route is
 * then asked for; undefined for any other request.
 *
 * Why not hono/cors: it sets headers on `c.res` before the route has answered, so the route's
 * response is then copied into a new one, which turns @hono/node-server's lightweight response
 * into a web-stream-backed one and costs every request a ReadableStream; and it is a middleware,
 * which keeps frames suspended for as long as a long-poll is parked (see installRequestLog).
 */
export function corsPreflight(request: Request, path: string): Response | undefined {
  return request.method === 'OPTIONS' && isMatrixPath(path) ? new Response(null, { status: 204 }) : undefined;
}

/** The three CORS headers, on every answer under `/_matrix`. */
export function corsHeaders(path: string, headers: Headers): void {
  if (!isMatrixPath(path)) return;
  for (const name in CORS_HEADERS) headers.set(name, CORS_HEADERS[name]!);
}
