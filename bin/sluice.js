#!/usr/bin/env node
// Entry point of the `sluice` bin; the code lives in dist/ after `make build`.
// Under npx (and make), node_modules/.bin comes first on PATH, so `env node` is the pinned Node 24.
import { runCli } from '../dist/gateway/cli.js';

runCli();
