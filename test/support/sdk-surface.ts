/**
 * The SDK's public surface as text, one entry per export of `matrix-to-device-server/sdk` and
 * `/testing`: what each declares (interfaces, types, classes and function signatures, doc
 * comments left out), read with the TypeScript compiler. test/sdk-surface.test.ts compares it
 * with test/fixtures/sdk-surface.json, recorded with the SDK version it belongs to;
 * `npm run sdk:surface` records it again after SDK_VERSION was bumped.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const ENTRY_POINTS = { sdk: 'src/sdk/index.ts', testing: 'src/testing/index.ts' } as const;
export const SNAPSHOT = fileURLToPath(new URL('../fixtures/sdk-surface.json', import.meta.url));

export interface Surface {
  version: string;
  exports: Record<string, string>;
}

function declarationText(decl: ts.Declaration, checker: ts.TypeChecker): string {
  // Functions and constants by their type, so an implementation change that keeps the
  // signature is no change; declarations of types by their text without comments.
  if (ts.isFunctionDeclaration(decl) || ts.isVariableDeclaration(decl)) {
    const type = checker.getTypeAtLocation(decl);
    return checker.typeToString(type, decl, ts.TypeFormatFlags.NoTruncation | ts.TypeFormatFlags.UseFullyQualifiedType);
  }
  const printer = ts.createPrinter({ removeComments: true });
  if (ts.isClassDeclaration(decl)) {
    // Public members only: what a module can reach.
    const members = decl.members.filter((m) => !(ts.getCombinedModifierFlags(m as ts.Declaration) & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) && !(m.name !== undefined && ts.isPrivateIdentifier(m.name)));
    const stripped = ts.factory.updateClassDeclaration(decl, decl.modifiers, decl.name, decl.typeParameters, decl.heritageClauses, members.map((m) => (ts.isMethodDeclaration(m) || ts.isConstructorDeclaration(m) ? ts.factory.createPropertyDeclaration(undefined, ts.isConstructorDeclaration(m) ? 'constructor' : m.name, undefined, checker.typeToTypeNode(checker.getTypeAtLocation(m), undefined, ts.NodeBuilderFlags.NoTruncation), undefined) : m)));
    return printer.printNode(ts.EmitHint.Unspecified, stripped, decl.getSourceFile()).replace(/\s+/g, ' ');
  }
  return printer.printNode(ts.EmitHint.Unspecified, decl, decl.getSourceFile()).replace(/\s+/g, ' ');
}

export function currentSurface(): Record<string, string> {
  const files = Object.values(ENTRY_POINTS).map((f) => `${ROOT}/${f}`);
  const config = ts.getParsedCommandLineOfConfigFile(`${ROOT}/tsconfig.json`, {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} });
  const program = ts.createProgram(files, { ...(config?.options ?? {}), noEmit: true });
  const checker = program.getTypeChecker();
  const out: Record<string, string> = {};
  for (const [entry, file] of Object.entries(ENTRY_POINTS)) {
    const source = program.getSourceFile(`${ROOT}/${file}`);
    const moduleSymbol = source === undefined ? undefined : checker.getSymbolAtLocation(source);
    if (moduleSymbol === undefined) throw new Error(`cannot read ${file}`);
    for (const exported of checker.getExportsOfModule(moduleSymbol)) {
      const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
      const texts = (symbol.declarations ?? []).map((d) => declarationText(d, checker));
      out[`${entry}:${exported.name}`] = texts.join(' | ');
    }
  }
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => a.localeCompare(b)));
}

export function recordedSurface(): Surface {
  return JSON.parse(readFileSync(SNAPSHOT, 'utf8')) as Surface;
}

if (process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/^.*\/test\//, '/test/')) && process.argv.includes('--write')) {
  const { SDK_VERSION } = await import('../../src/sdk/version.ts');
  writeFileSync(SNAPSHOT, `${JSON.stringify({ version: SDK_VERSION, exports: currentSurface() }, null, 2)}\n`);
  console.warn(`recorded the SDK ${SDK_VERSION} surface in ${SNAPSHOT}`);
}
