#!/usr/bin/env node
// Entry point for the `sluice` bin; the code lives in dist/ after `make build`.
import '../dist/gateway/cli.js';
