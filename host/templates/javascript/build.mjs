// Builds src/plugin.js into a WebAssembly component for the `handler` world of wit/.
// Usage: node build.mjs OUTPUT.wasm   (build.sh calls it, then renames the file into place)
// `http` and `fetch-event` are disabled: they would make the component import wasi:http,
// which eventhost refuses to load.

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
// that relative imports (./uuid5.js) resolve.
process.chdir(join(here, 'src'));
const { component } = await componentize({
  sourcePath: join(here, 'src', 'plugin.js'),
  witPath: join(here, 'wit'),
  worldName: 'handler',
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(outputPath, component);
