#!/usr/bin/env node
// Entry point for the packaged CLI: runs the compiled sources (`npm run build`).
import "../dist/src/cli/main.js";
