// The Node producer example of the top-level README (the block after `<!-- test: node-readme -->`),
// run as written against a real worker on a throwaway redis-server (prefix `hmr2`, as the
// example assumes), with a directory of frames beside it.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';

import { Client } from '../dist/index.js';
import { PACKAGE_DIR, REPO_ROOT, startServer, startWorker, testFrame, waitUntil, workerBinary } from './support.mjs';

const run = promisify(execFile);
const MARKER = '<!-- test: node-readme -->';
const FRAMES = 5;

/** The fenced block right after the marker line. */
function readmeBlock(text) {
  const at = text.indexOf(MARKER);
  if (at < 0) throw new Error(`README.md has no ${MARKER} line`);
  const m = /^```(js|javascript|mjs)\n([\s\S]*?)^```$/m.exec(text.slice(at + MARKER.length));
  if (!m || text.slice(at + MARKER.length, at + MARKER.length + m.index).trim() !== '') {
    throw new Error(`the line after ${MARKER} in README.md must open a \`\`\`js block`);
  }
  return m[2];
}

let server;
let worker;
let dir;

before(async () => {
  workerBinary();
  server = await startServer();
  worker = await startWorker({ url: server.url, prefix: 'hmr2' });
  const client = await Client.connect({ url: server.url });
  try {
    await waitUntil(`the worker's model hash (worker log: ${worker.log})`, 60_000, () => client.modelInfo());
  } finally {
    await client.close();
  }
  // Inside the package, so the block's `import ... from '@hmr2/client'` resolves to this package.
  dir = mkdtempSync(join(PACKAGE_DIR, '.readme-'));
});

after(async () => {
  await worker?.stop();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the README block is short and runs as written: a video in, its tracks out', async () => {
  const block = readmeBlock(readFileSync(join(REPO_ROOT, 'README.md'), 'utf8'));
  assert.ok(block.trim().split('\n').length < 20, 'the README example stays under 20 lines');
  writeFileSync(join(dir, 'example.mjs'), block);
  mkdirSync(join(dir, 'frames'));
  for (let n = 0; n < FRAMES; n++) writeFileSync(join(dir, 'frames', `${String(n + 1).padStart(6, '0')}.png`), testFrame(n));
  const { stdout } = await run(process.execPath, ['example.mjs'], {
    cwd: dir,
    timeout: 120_000,
    env: { ...process.env, HMR2_URL: server.url },
  });
  assert.match(stdout, /^frames: 0\/5 frames answered$/m);
  assert.match(stdout, /^done: 5\/5 frames answered$/m);
  assert.match(stdout, /^track 1: frames 0-4, \d+ interpolated$/m);
  assert.match(stdout, /^ok: 5 frames, 1 people in the first$/m);
});
