// Turns plugin.js into a WebAssembly component for the `consumer` world, with
// componentize-js called as a library (`jco componentize` does not work here).
//
//   node componentize.mjs OUT.wasm
//
// build.sh runs it; it finds componentize-js in $COMPONENTIZE_JS_DIR (the
// folder holding its node_modules), by default
// ${SWITCHYARD_TOOLS:-$HOME/.cache/switchyard/tools}/js. Every other path is
// resolved from this file's own location.
import { readFile, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const SOURCE = 'plugin.js';
const WIT_DIR = process.env.SWITCHYARD_WIT_DIR || resolve(HERE, '../../guest-sdk/wit');
const WORLD = 'consumer';

// The host links WASI p2 (nothing granted: no stdio, files or sockets),
// `wasi:http` (outbound requests, governed by the subscription's `egress`
// settings) and `switchyard:plugin/host`. So fetch() (`http`) stays; the
// `wasi:http/incoming-handler` export (`fetch-event`) and console output
// (`stdio`) go. Clocks (Date.now, setTimeout) and random (Math.random,
// crypto) work: the host provides wasi:clocks and wasi:random.
const DISABLE_FEATURES = ['fetch-event', 'stdio'];

function die(message) {
  console.error(`componentize.mjs: ${message}`);
  process.exit(1);
}

const out = process.argv[2];
if (process.argv.length !== 3 || !out) die('usage: node componentize.mjs OUT.wasm');
const outPath = resolve(out);

const toolsDir =
  process.env.COMPONENTIZE_JS_DIR ||
  join(process.env.SWITCHYARD_TOOLS || join(homedir(), '.cache/switchyard/tools'), 'js');
const pkgDir = join(toolsDir, 'node_modules/@bytecodealliance/componentize-js');

// The package only has an `import` export, which require.resolve cannot see
// and import.meta.resolve (Node 20) cannot resolve from another folder: read
// its entry point from its package.json.
let pkg;
try {
  pkg = JSON.parse(await readFile(join(pkgDir, 'package.json'), 'utf8'));
} catch (e) {
  die(`componentize-js is not installed in ${toolsDir} (${e.message}); run build.sh`);
}
const entry = typeof pkg.exports === 'object' ? pkg.exports.import : pkg.main;
const { componentize } = await import(pathToFileURL(join(pkgDir, entry)).href);

// componentize-js maps the source's folder into the engine as `/` when the
// source is under the working directory, and embeds paths relative to it:
// build from here so the output does not depend on the caller's directory.
process.chdir(HERE);

const { component } = await componentize({
  sourcePath: join(HERE, SOURCE),
  witPath: WIT_DIR,
  worldName: WORLD,
  disableFeatures: DISABLE_FEATURES,
});

const tmp = `${outPath}.tmp.${process.pid}`;
await writeFile(tmp, component);
await rename(tmp, outPath);
console.error(`componentize.mjs: componentize-js ${pkg.version} wrote ${outPath}`);
