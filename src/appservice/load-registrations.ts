import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { AppserviceConfigError, AppserviceRegistry } from './registration.ts';

/** Reads the registration files named in the config; every problem is reported at once. */
export function loadAppserviceRegistrations(paths: readonly string[], serverName: string): AppserviceRegistry {
  const files: { source: string; content: unknown }[] = [];
  const problems: string[] = [];
  for (const path of paths) {
    try {
      files.push({ source: path, content: parseYaml(readFileSync(path, 'utf8')) });
    } catch (e) {
      problems.push(`${path}: ${(e as Error).message}`);
    }
  }
  if (problems.length > 0) throw new AppserviceConfigError(problems);
  return AppserviceRegistry.fromFiles(files, serverName);
}
