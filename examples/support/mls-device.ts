import {
  acceptAll,
  createApplicationMessage,
  createCommit,
  createGroup,
  decodeMlsMessage,
  defaultCapabilities,
  defaultLifetime,
  emptyPskIndex,
  encodeMlsMessage,
  generateKeyPackage,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
  joinGroup,
  processMessage,
  type Capabilities,
  type CiphersuiteImpl,
  type CiphersuiteName,
  type ClientState,
  type KeyPackage,
  type MLSMessage,
  type PrivateKeyPackage,
} from 'ts-mls';
import { decodeKeyPackage, encodeKeyPackage } from 'ts-mls/keyPackage.js';

const SUITE: CiphersuiteName = 'MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519';
/** The KeyPackage extension marking a last-resort package (draft-ietf-mls-extensions, 0x000A). */
export const LAST_RESORT_EXTENSION = 0x000a;
const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64').replace(/=+$/, '');
const unb64 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'base64'));

function decode(text: string): MLSMessage {
  const decoded = decodeMlsMessage(unb64(text), 0);
  if (decoded === undefined) throw new Error('not an MLSMessage');
  return decoded[0];
}

/** A commit made but not applied: the delivery service decides whether it ever happens. */
export interface PendingCommit {
  message: string;
  welcome?: string;
  newState: ClientState;
}

/**
 * One device's MLS state with ts-mls, for the examples and tests: KeyPackages, a group, commits
 * that are applied only once the delivery service accepted them.
 */
export class MlsDevice {
  private readonly keyPackages: { publicPackage: KeyPackage; privatePackage: PrivateKeyPackage }[] = [];
  private state: ClientState | null = null;

  private constructor(
    readonly userId: string,
    readonly deviceId: string,
    private readonly impl: CiphersuiteImpl,
  ) {}

  static async create(userId: string, deviceId: string, suite: CiphersuiteName = SUITE): Promise<MlsDevice> {
    return new MlsDevice(userId, deviceId, await getCiphersuiteImpl(getCiphersuiteFromName(suite)));
  }

  /**
   * A fresh KeyPackage, bare (RFC 9420 `KeyPackage`, as MSC4244 uploads it) in unpadded base64,
   * whose basic credential names this user and device (`<user_id>|<device_id>`). `lastResort`
   * adds the last_resort extension; `extensions` are extra extension types the leaf supports.
   */
  async keyPackage(opts: { identity?: string; lastResort?: boolean; extensions?: number[] } = {}): Promise<string> {
    const identity = opts.identity ?? `${this.userId}|${this.deviceId}`;
    const base = defaultCapabilities();
    const extraExtensions = [...(opts.extensions ?? []), ...(opts.lastResort === true ? [LAST_RESORT_EXTENSION] : [])];
    const capabilities: Capabilities = { ...base, extensions: [...new Set([...base.extensions, ...extraExtensions])] };
    const extensions = opts.lastResort === true ? [{ extensionType: LAST_RESORT_EXTENSION, extensionData: new Uint8Array() }] : [];
    const kp = await generateKeyPackage({ credentialType: 'basic', identity: new TextEncoder().encode(identity) }, capabilities, defaultLifetime, extensions, this.impl);
    this.keyPackages.push(kp);
    return b64(encodeKeyPackage(kp.publicPackage));
  }

  /** `one_time_keys` (or `fallback_keys`) for /keys/upload: `{"mls:<key_id>": {"key": <KeyPackage>}}` (MSC4244). */
  async mlsKeys(n: number, opts: { lastResort?: boolean; extensions?: number[] } = {}): Promise<Record<string, { key: string }>> {
    const out: Record<string, { key: string }> = {};
    for (let i = 0; i < n; i++) out[`mls:${b64(crypto.getRandomValues(new Uint8Array(9))).replace(/[+/]/g, '_')}`] = { key: await this.keyPackage(opts) };
    return out;
  }

  get epoch(): number {
    return this.state === null ? -1 : Number(this.state.groupContext.epoch);
  }

  get groupId(): string {
    if (this.state === null) throw new Error('not in a group');
    return b64(this.state.groupContext.groupId);
  }

  async createGroup(groupId: Uint8Array): Promise<void> {
    await this.keyPackage();
    const own = this.keyPackages.at(-1);
    if (own === undefined) throw new Error('no key package');
    this.state = await createGroup(groupId, own.publicPackage, own.privatePackage, [], this.impl);
  }

  /** A commit adding the given KeyPackages (or an empty, path-updating one), not yet applied. */
  async commit(add: readonly string[] = [], opts: { publicMessage?: boolean } = {}): Promise<PendingCommit> {
    if (this.state === null) throw new Error('not in a group');
    const proposals = add.map((text) => {
      const bytes = unb64(text);
      const decoded = decodeKeyPackage(bytes, 0);
      if (decoded === undefined || decoded[1] !== bytes.length) throw new Error('not a bare KeyPackage');
      return { proposalType: 'add' as const, add: { keyPackage: decoded[0] } };
    });
    const result = await createCommit(
      { state: this.state, cipherSuite: this.impl },
      { extraProposals: proposals, ratchetTreeExtension: true, wireAsPublicMessage: opts.publicMessage ?? false },
    );
    return {
      message: b64(encodeMlsMessage(result.commit)),
      ...(result.welcome === undefined ? {} : { welcome: b64(encodeMlsMessage({ version: 'mls10', wireformat: 'mls_welcome', welcome: result.welcome })) }),
      newState: result.newState,
    };
  }

  /** The delivery service accepted our commit: move to its epoch. */
  apply(pending: PendingCommit): void {
    this.state = pending.newState;
  }

  /** Joins from a Welcome released by the delivery service, with whichever of our KeyPackages it was made for. */
  async join(welcomeText: string): Promise<void> {
    const m = decode(welcomeText);
    if (m.wireformat !== 'mls_welcome') throw new Error('not a Welcome');
    for (const kp of this.keyPackages) {
      try {
        this.state = await joinGroup(m.welcome, kp.publicPackage, kp.privatePackage, emptyPskIndex, this.impl);
        return;
      } catch {
        // Not the package this Welcome was encrypted to; try the next.
      }
    }
    throw new Error('no KeyPackage of ours matches this Welcome');
  }

  /** Processes a relayed message or commit: returns the plaintext of an application message, else null. */
  async receive(text: string): Promise<string | null> {
    if (this.state === null) throw new Error('not in a group');
    const m = decode(text);
    if (m.wireformat !== 'mls_private_message' && m.wireformat !== 'mls_public_message') throw new Error('not a framed message');
    const result = await processMessage(m, this.state, emptyPskIndex, acceptAll, this.impl);
    this.state = result.newState;
    return result.kind === 'applicationMessage' ? new TextDecoder().decode(result.message) : null;
  }

  async encrypt(text: string): Promise<string> {
    if (this.state === null) throw new Error('not in a group');
    const result = await createApplicationMessage(this.state, new TextEncoder().encode(text), this.impl);
    this.state = result.newState;
    return b64(encodeMlsMessage({ version: 'mls10', wireformat: 'mls_private_message', privateMessage: result.privateMessage }));
  }
}
