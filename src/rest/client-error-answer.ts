import type { Duplex } from 'node:stream';
import type { ErrCode } from '../errors/errcodes.ts';

/** A server that emits node's `clientError` (node:http and node:https servers do). */
interface ClientErrorSource {
  on(event: 'clientError', listener: (err: NodeJS.ErrnoException, socket: Duplex) => void): unknown;
}

const ANSWERS: Record<string, [status: number, reason: string, errcode: ErrCode, message: string]> = {
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large', 'M_TOO_LARGE', 'Request headers are too large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout', 'M_UNKNOWN', 'The request was not received in time'],
};
const MALFORMED: [number, string, ErrCode, string] = [400, 'Bad Request', 'M_UNRECOGNIZED', 'Malformed HTTP request'];

/**
 * Requests node's HTTP parser refuses before any route sees them (headers over its 16 KiB
 * limit, a malformed request line, a request that timed out) are answered by node itself with
 * an empty body. This answers them as every other error of the server is answered: a Matrix
 * error body (`errcode` + `error`), with the status node would have used. Install it on every
 * listener (client, federation with or without TLS, metrics).
 */
export function answerClientErrorsAsMatrix(server: ClientErrorSource): void {
  server.on('clientError', (err, socket) => {
    // Nothing to answer (the peer went away), or a response already started on this socket.
    const started = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true;
    if (err.code === 'ECONNRESET' || !socket.writable || started) {
      socket.destroy();
      return;
    }
    const [status, reason, errcode, message] = ANSWERS[err.code ?? ''] ?? MALFORMED;
    const body = JSON.stringify({ errcode, error: message });
    socket.end(
      `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
    // The client may still be sending what overflowed; do not wait for it to stop.
    setTimeout(() => socket.destroy(), 1_000).unref();
  });
}
