import { resolveSrv } from 'node:dns/promises';
import { isIP } from 'node:net';

/** Where to reach a server: the base URL to dial, the Host header and TLS name to present. */
export interface ResolvedServer {
  baseUrl: string;
  host: string;
  tlsServerName: string;
}

export interface DiscoveryOptions {
  /** Test/development: server name → base URL, bypassing discovery. */
  staticRoutes: Readonly<Record<string, string>>;
  /** Test/development: dial plain HTTP instead of HTTPS. */
  allowHttp: boolean;
  /** Fetches `https://<host>/.well-known/matrix/server`; returns null when there is none. */
  fetchWellKnown: (host: string) => Promise<unknown>;
  resolveSrv?: (name: string) => Promise<{ name: string; port: number; priority: number; weight: number }[]>;
}

const HOUR = 3600_000;

function splitHostPort(name: string): { host: string; port: number | null } {
  const v6 = /^(\[[^\]]+\])(?::(\d+))?$/.exec(name);
  if (v6 !== null) return { host: v6[1] ?? name, port: v6[2] === undefined ? null : Number(v6[2]) };
  const m = /^([^:]+)(?::(\d+))?$/.exec(name);
  return { host: m?.[1] ?? name, port: m?.[2] === undefined ? null : Number(m[2]) };
}

/**
 * Server discovery per the spec ("Resolving server names"): IP literal or explicit port → that
 * address; else `.well-known` delegation (itself resolved by the same rules, without a further
 * well-known); else SRV `_matrix-fed._tcp` (then the deprecated `_matrix._tcp`); else port 8448.
 */
export class ServerDiscovery {
  private readonly cache = new Map<string, { value: ResolvedServer; expires: number }>();

  constructor(private readonly opts: DiscoveryOptions) {}

  async resolve(serverName: string): Promise<ResolvedServer> {
    const fixed = this.opts.staticRoutes[serverName];
    if (fixed !== undefined) {
      return { baseUrl: fixed.replace(/\/$/, ''), host: serverName, tlsServerName: splitHostPort(serverName).host };
    }
    const cached = this.cache.get(serverName);
    if (cached !== undefined && cached.expires > Date.now()) return cached.value;
    const value = await this.discover(serverName);
    this.cache.set(serverName, { value, expires: Date.now() + HOUR });
    return value;
  }

  private url(host: string, port: number): string {
    return `${this.opts.allowHttp ? 'http' : 'https'}://${host}:${port}`;
  }

  private async discover(serverName: string): Promise<ResolvedServer> {
    const { host, port } = splitHostPort(serverName);
    const bareHost = host.replace(/^\[|\]$/g, '');
    if (isIP(bareHost) !== 0 || port !== null) {
      return { baseUrl: this.url(host, port ?? 8448), host: serverName, tlsServerName: bareHost };
    }
    const delegated = await this.wellKnown(host);
    if (delegated !== null) {
      const d = splitHostPort(delegated);
      const dBare = d.host.replace(/^\[|\]$/g, '');
      if (isIP(dBare) !== 0 || d.port !== null) {
        return { baseUrl: this.url(d.host, d.port ?? 8448), host: delegated, tlsServerName: dBare };
      }
      const srv = await this.srv(d.host);
      if (srv !== null) return { baseUrl: this.url(srv.name, srv.port), host: delegated, tlsServerName: d.host };
      return { baseUrl: this.url(d.host, 8448), host: delegated, tlsServerName: d.host };
    }
    const srv = await this.srv(host);
    if (srv !== null) return { baseUrl: this.url(srv.name, srv.port), host: serverName, tlsServerName: host };
    return { baseUrl: this.url(host, 8448), host: serverName, tlsServerName: host };
  }

  private async wellKnown(host: string): Promise<string | null> {
    try {
      const body = await this.opts.fetchWellKnown(host);
      const server = (body as { 'm.server'?: unknown } | null)?.['m.server'];
      return typeof server === 'string' && server !== '' ? server : null;
    } catch {
      return null;
    }
  }

  private async srv(host: string): Promise<{ name: string; port: number } | null> {
    const lookup = this.opts.resolveSrv ?? resolveSrv;
    for (const prefix of ['_matrix-fed._tcp', '_matrix._tcp']) {
      try {
        const records = await lookup(`${prefix}.${host}`);
        const best = [...records].sort((a, b) => a.priority - b.priority || b.weight - a.weight)[0];
        if (best !== undefined) return { name: best.name, port: best.port };
      } catch {
        // No record of this kind: try the next.
      }
    }
    return null;
  }
}
