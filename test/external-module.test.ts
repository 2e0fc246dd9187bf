import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectToDevice, overHttp, TestClient } from './support/client.ts';
import { freePort, ServerProcess } from './support/server-process.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * An operator's deployment folder outside this repository: the server package and a handler
 * module installed in its node_modules (as `npm install` would put them: the server a link to
 * this checkout), and a TypeScript module of the operator's own in a folder beside.
 */
function deploymentFolder(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tds-deploy-'));
  const modules = join(dir, 'node_modules');
  mkdirSync(modules);
  symlinkSync(ROOT, join(modules, 'matrix-to-device-server'));
  for (const dep of ['valibot', 'drizzle-orm']) symlinkSync(join(ROOT, 'node_modules', dep), join(modules, dep));

  // A JavaScript module published as a package, with one table of its own.
  const pkg = join(modules, 'notes-module');
  mkdirSync(join(pkg, 'drizzle', 'meta'), { recursive: true });
  writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name: 'notes-module', type: 'module', exports: { '.': { import: './index.js' } } }));
  writeFileSync(
    join(pkg, 'drizzle', 'meta', '_journal.json'),
    JSON.stringify({ version: '7', dialect: 'postgresql', entries: [{ idx: 0, version: '7', when: 1_800_000_000_000, tag: '0000_notes', breakpoints: true }] }),
  );
  // No IF NOT EXISTS: a second start that applied it again would fail to start.
  writeFileSync(join(pkg, 'drizzle', '0000_notes.sql'), 'CREATE TABLE "outside_notes" ("id" serial PRIMARY KEY, "author" text NOT NULL, "note" text NOT NULL);\n');
  writeFileSync(
    join(pkg, 'index.js'),
    `import * as v from 'valibot';
import { defineHandler, queryRows } from 'matrix-to-device-server/sdk';
import { sql } from 'drizzle-orm';

export default defineHandler({
  name: 'notes',
  migrations: new URL('./drizzle', import.meta.url),
  setup(ctx) {
    ctx.log.info('notes module set up');
    return { state: { prefix: 'note' }, stop: () => ctx.log.info('notes module stopped') };
  },
  events: {
    'org.example.note.add': {
      schema: v.object({ note: v.string() }),
      async handle(event, ctx) {
        await ctx.db.execute(sql\`insert into outside_notes (author, note) values (\${event.sender}, \${event.content.note})\`);
        const [row] = await queryRows(ctx.db, sql\`select count(*)::int as n from outside_notes\`);
        await ctx.reply('org.example.note.added', { [ctx.state.prefix + 's']: row.n });
      },
    },
  },
});
`,
  );

  // A TypeScript module in a folder of its own, named by path.
  mkdirSync(join(dir, 'my-modules'));
  writeFileSync(
    join(dir, 'my-modules', 'shout.ts'),
    `import * as v from 'valibot';
import { defineHandler, type EventOf } from 'matrix-to-device-server/sdk';

const content = v.object({ text: v.string() });
function loud(event: EventOf<typeof content>): string {
  return event.content.text.toUpperCase();
}

export default defineHandler({
  name: 'shout',
  events: {
    'org.example.shout': { schema: content, handle: (event, ctx) => ctx.reply('org.example.shouted', { text: loud(event) }) },
  },
});
`,
  );
  return dir;
}

describe('handler modules from outside the repository, under npm start', () => {
  let dir: string;
  let server: ServerProcess;

  beforeAll(async () => {
    dir = deploymentFolder();
    const port = await freePort();
    server = await ServerProcess.create(`localhost:${port}`, port, {
      metrics: { enabled: false },
      registration: { enabled: true },
      handlers: [{ module: 'ping' }, { module: 'notes-module' }, { module: './my-modules/shout.ts' }],
    });
    server.cwd = dir;
    // `npm start`'s command, run from the deployment folder.
    server.entry = ['--conditions=matrix-to-device-source', '--import', pathToFileURL(join(ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href, join(ROOT, 'src', 'main.ts')];
    await server.start();
  }, 90_000);

  afterAll(async () => {
    await server.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('loads a JavaScript package by name and a TypeScript file by path; the package\'s table survives a restart without its migration running again', async () => {
    expect(server.stderr).toContain('"msg":"module migrations applied"');
    expect(server.stderr).toContain('"msg":"notes module set up"');
    const api = overHttp(server.baseUrl);
    const alice = await TestClient.register(api, 'alice');
    const me = `@:${server.serverName}`;
    await collectToDevice(alice, 0, 0);

    expect((await alice.sendToDevice('org.example.note.add', { [me]: { '': { note: 'first' } } })).status).toBe(200);
    expect((await alice.sendToDevice('org.example.shout', { [me]: { '': { text: 'hello' } } })).status).toBe(200);
    const events = await collectToDevice(alice, 2);
    expect(events).toEqual(
      expect.arrayContaining([
        { sender: me, type: 'org.example.note.added', content: { notes: 1 } },
        { sender: me, type: 'org.example.shouted', content: { text: 'HELLO' } },
      ]),
    );

    expect(await server.stop('SIGTERM')).toBe(0);
    expect(server.stderr).toContain('"msg":"notes module stopped"');
    await server.start();
    expect(server.stderr).not.toContain('"msg":"module migrations applied"');
    expect((await alice.sendToDevice('org.example.note.add', { [me]: { '': { note: 'second' } } })).status).toBe(200);
    expect(await collectToDevice(alice, 1)).toEqual([{ sender: me, type: 'org.example.note.added', content: { notes: 2 } }]);
  });
});
