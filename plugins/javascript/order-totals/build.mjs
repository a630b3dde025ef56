// Builds order-totals.js into a WebAssembly component for the `handler` world of wit/.
//
// Usage: node build.mjs OUTPUT.wasm   (plugins/javascript/build.sh calls it; it writes to a
// temporary name and renames, so that a watching daemon never sees half a file).
// Uses componentize-js's JavaScript API: the `jco componentize` command fails on some machines
// ("failed to get path metadata"). `http` and `fetch-event` are disabled because they make the
// component import wasi:http, which eventhost refuses to load.
// package.json pins @bytecodealliance/preview2-shim itself: componentize-js 0.23.0 imports it
// at build time without declaring it, and `npm ci` would otherwise leave it out.

import { writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { componentize } from '@bytecodealliance/componentize-js';

const here = dirname(fileURLToPath(import.meta.url));
const output = process.argv[2];
if (!output) {
  console.error('usage: node build.mjs OUTPUT.wasm');
  process.exit(2);
}
const outputPath = resolve(output);

// componentize-js maps the current directory into the build: run from the source folder so
// that relative imports (./strict-json.js) resolve.
process.chdir(here);
const { component } = await componentize({
  sourcePath: join(here, 'order-totals.js'),
  witPath: resolve(here, '../../../wit'),
  worldName: 'handler',
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(outputPath, component);
