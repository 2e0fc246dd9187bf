import { timingSafeEqual, createHash } from 'node:crypto';
import * as v from 'valibot';

const Namespace = v.looseObject({
  exclusive: v.optional(v.boolean(), false),
  regex: v.pipe(v.string(), v.minLength(1)),
});

/** The standard appservice registration file (spec "Application Service API"), plus the opt-ins. */
export const RegistrationSchema = v.looseObject({
  id: v.pipe(v.string(), v.minLength(1)),
  url: v.nullish(v.pipe(v.string(), v.url('must be a URL or null'))),
  as_token: v.pipe(v.string(), v.minLength(1)),
  hs_token: v.pipe(v.string(), v.minLength(1)),
  sender_localpart: v.pipe(v.string(), v.minLength(1)),
  namespaces: v.optional(
    v.looseObject({
      users: v.optional(v.array(Namespace), []),
      aliases: v.optional(v.array(v.unknown()), []),
      rooms: v.optional(v.array(v.unknown()), []),
    }),
    {},
  ),
  receive_ephemeral: v.optional(v.boolean(), false),
  'de.sorunome.msc2409.push_ephemeral': v.optional(v.boolean(), false),
  'org.matrix.msc3202': v.optional(v.boolean(), false),
  rate_limited: v.optional(v.boolean(), true),
});

export type RegistrationFile = v.InferOutput<typeof RegistrationSchema>;

export interface Appservice {
  id: string;
  url: string | null;
  asToken: string;
  hsToken: string;
  senderUserId: string;
  users: { exclusive: boolean; regex: RegExp }[];
  /** Set by any of the opt-in flags seen in the wild; without one, to-device stays in /sync. */
  receivesToDevice: boolean;
  /** `rate_limited: false` exempts the appservice's requests from rate limits. */
  rateLimited: boolean;
}

export class AppserviceConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid appservice registrations:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'AppserviceConfigError';
  }
}

const digest = (token: string) => createHash('sha256').update(token).digest();

/** The configured appservices: token lookup and namespace rules. */
export class AppserviceRegistry {
  private readonly byTokenDigest = new Map<string, Appservice>();

  constructor(readonly all: readonly Appservice[]) {
    for (const as of all) this.byTokenDigest.set(digest(as.asToken).toString('hex'), as);
  }

  /** Validates parsed registration files (`source` names each one in errors). */
  static fromFiles(files: readonly { source: string; content: unknown }[], serverName: string): AppserviceRegistry {
    const problems: string[] = [];
    const services: Appservice[] = [];
    const ids = new Set<string>();
    const tokens = new Map<string, string>();
    for (const { source, content } of files) {
      const parsed = v.safeParse(RegistrationSchema, content);
      if (!parsed.success) {
        for (const issue of parsed.issues) problems.push(`${source}: ${issue.path?.map((p) => String(p.key)).join('.') ?? '(root)'}: ${issue.message}`);
        continue;
      }
      const r = parsed.output;
      if (ids.has(r.id)) problems.push(`${source}: duplicate appservice id "${r.id}"`);
      ids.add(r.id);
      for (const [kind, token] of [['as_token', r.as_token], ['hs_token', r.hs_token]] as const) {
        const seen = tokens.get(token);
        if (seen !== undefined) problems.push(`${source}: ${kind} is already used by ${seen}`);
        tokens.set(token, `${source} (${kind})`);
      }
      const users: Appservice['users'] = [];
      for (const ns of r.namespaces.users) {
        try {
          // Anchored: a namespace regex must match the whole user ID.
          users.push({ exclusive: ns.exclusive, regex: new RegExp(`^(?:${ns.regex})$`) });
        } catch (e) {
          problems.push(`${source}: invalid namespace regex ${JSON.stringify(ns.regex)}: ${(e as Error).message}`);
        }
      }
      services.push({
        id: r.id,
        url: r.url ?? null,
        asToken: r.as_token,
        hsToken: r.hs_token,
        senderUserId: `@${r.sender_localpart}:${serverName}`,
        users,
        receivesToDevice: r.receive_ephemeral || r['de.sorunome.msc2409.push_ephemeral'] || r['org.matrix.msc3202'],
        rateLimited: r.rate_limited,
      });
    }
    if (problems.length > 0) throw new AppserviceConfigError(problems);
    return new AppserviceRegistry(services);
  }

  /** The appservice an access token belongs to, compared in constant time. */
  byAsToken(token: string): Appservice | null {
    // Most servers have no appservice: no digest for every request's token.
    if (this.byTokenDigest.size === 0) return null;
    const d = digest(token);
    const as = this.byTokenDigest.get(d.toString('hex'));
    return as !== undefined && timingSafeEqual(digest(as.asToken), d) ? as : null;
  }

  /** Whether the appservice may act as this user: its sender, or a user in its namespaces. */
  owns(as: Appservice, userId: string): boolean {
    return userId === as.senderUserId || as.users.some((ns) => ns.regex.test(userId));
  }

  /** The appservice that reserves this user ID exclusively, if any. */
  exclusiveOwner(userId: string): Appservice | null {
    return this.all.find((as) => userId === as.senderUserId || as.users.some((ns) => ns.exclusive && ns.regex.test(userId))) ?? null;
  }

  /** Appservices that receive to-device messages for this user, and whether exclusively. */
  recipientsFor(userId: string): { as: Appservice; exclusive: boolean }[] {
    const out: { as: Appservice; exclusive: boolean }[] = [];
    for (const as of this.all) {
      if (!as.receivesToDevice || as.url === null) continue;
      if (userId === as.senderUserId) out.push({ as, exclusive: true });
      else {
        const matches = as.users.filter((ns) => ns.regex.test(userId));
        if (matches.length > 0) out.push({ as, exclusive: matches.some((ns) => ns.exclusive) });
      }
    }
    return out;
  }
}
