#!/usr/bin/env node
// Entry point of the `sluice` bin; the code lives in dist/ after `make build`.
// Under npx and make, node_modules/.bin comes first on PATH, so `env node` is the pinned Node 24. Started any
// other way with an older system Node, re-run on the pinned runtime instead of failing on a missing builtin.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const major = Number(process.versions.node.split('.')[0]);
if (major < 22) {
  const pinned = fileURLToPath(new URL('../node_modules/.bin/node', import.meta.url));
  if (!existsSync(pinned)) {
    console.error(
      `sluice needs Node >= 22.12 (this is ${process.version}); run 'make build' to install the pinned runtime`,
    );
    process.exit(2);
  }
  const r = spawnSync(pinned, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
  });
  process.exit(r.status ?? 1);
}
const { runCli } = await import('../dist/gateway/cli.js');
runCli();
