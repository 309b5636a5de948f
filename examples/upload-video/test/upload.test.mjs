// The upload example end to end: a small mp4 made with ffmpeg (from the `hmr2 synth` frames when
// that binary is there, else from ffmpeg's own test pattern) goes through upload.mjs to a real
// worker, and the JSON it writes has one tracked frame per video frame and the summary.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import {
  prefix,
  REPO_ROOT,
  startServer,
  startWorker,
  tempDir,
  waitUntil,
  workerBinary,
} from '../../../clients/node/test/support.mjs';
import { Client } from '@hmr2/client';

const run = promisify(execFile);
const UPLOAD = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'upload.mjs');
const FRAMES = 8;
const FPS = 12;

let server;
let worker;
let queue;
let tmp;
let clip;

/** The `hmr2` tool binary (for `hmr2 synth`): HMR2_BIN, else <repo>/target/debug/hmr2; null when absent. */
function synthBinary() {
  const bin = process.env.HMR2_BIN ?? join(REPO_ROOT, 'target', 'debug', 'hmr2');
  return existsSync(bin) ? bin : null;
}

/** A FRAMES-frame mp4 at FPS; says which source its frames came from. */
async function makeClip(dir) {
  const out = join(dir, 'clip.mp4');
  const encode = ['-c:v', 'mpeg4', '-q:v', '3', '-pix_fmt', 'yuv420p', out];
  const synth = synthBinary();
  if (synth) {
    const frames = join(dir, 'synth');
    await run(synth, ['synth', '--count', String(FRAMES), '--size', '320x240', '--out', frames], { timeout: 60_000 });
    const jpegs = readdirSync(frames).filter((f) => /\.jpe?g$/i.test(f)).sort();
    assert.equal(jpegs.length, FRAMES, `hmr2 synth wrote ${FRAMES} frames`);
    // Even sizes for yuv420p.
    await run('ffmpeg', ['-v', 'error', '-framerate', String(FPS), '-pattern_type', 'glob', '-i', join(frames, '*.jpg'),
      '-vf', 'scale=trunc(iw/2)*2:trunc(ih/2)*2', ...encode], { timeout: 60_000 });
    return { out, source: `hmr2 synth (${synth})` };
  }
  await run('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', `testsrc=size=320x240:rate=${FPS}`, '-frames:v', String(FRAMES), ...encode], {
    timeout: 60_000,
  });
  return { out, source: 'ffmpeg test pattern (lavfi testsrc)' };
}

before(async () => {
  workerBinary();
  tmp = tempDir('upload');
  clip = await makeClip(tmp.dir);
  process.stderr.write(`# upload test clip: ${FRAMES} frames at ${FPS} fps from ${clip.source}\n`);
  server = await startServer();
  queue = prefix('upload');
  worker = await startWorker({ url: server.url, prefix: queue });
  const client = await Client.connect({ url: server.url, prefix: queue });
  try {
    await waitUntil(`the worker's model hash (worker log: ${worker.log})`, 60_000, () => client.modelInfo());
  } finally {
    await client.close();
  }
});

after(async () => {
  await worker?.stop();
  await server?.stop();
  tmp?.done();
});

test('an mp4 becomes one tracked video: one tracked frame per video frame, the summary, a line per track', async () => {
  const out = join(tmp.dir, 'tracks.json');
  const { stdout, stderr } = await run(
    process.execPath,
    [UPLOAD, clip.out, '--url', server.url, '--prefix', queue, '--video-id', 'clip-1', '--out', out, '--timeout', '90'],
    { timeout: 120_000 },
  );
  assert.match(stderr, new RegExp(`extracting frames of .*clip.mp4 at ${FPS} fps`));
  assert.match(stderr, new RegExp(`video clip-1: ${FRAMES} frames queued`));
  const doc = JSON.parse(readFileSync(out, 'utf8'));
  assert.equal(doc.video_id, 'clip-1');
  assert.equal(doc.fps, FPS);
  assert.deepEqual(
    doc.frames.map((f) => f.frame_number),
    [...Array(FRAMES).keys()],
  );
  assert.ok(doc.frames.every((f) => f.video_id === 'clip-1' && f.status === 'ok'));
  assert.equal(doc.done.status, 'ok');
  assert.deepEqual([doc.done.frames, doc.done.ok_frames, doc.done.missing_frames], [FRAMES, FRAMES, 0]);
  assert.ok(doc.done.tracks.length >= 1 || doc.frames.every((f) => f.people.length === 0));
  // The summary: one line per track, with its first and last frame.
  assert.match(stdout, new RegExp(`video clip-1: ok, ${FRAMES} frames \\(${FRAMES} ok, 0 errors, 0 missing\\)`));
  for (const t of doc.done.tracks) {
    const seen = t.frames - t.interpolated_frames;
    assert.match(stdout, new RegExp(`^\\s*${t.track_id}\\s+${t.first_frame}\\s+${t.last_frame}\\s+${t.frames}\\s+${seen}\\s+${t.interpolated_frames}$`, 'm'));
  }
});

test('--fps samples the video at that rate and the video says so', async () => {
  const out = join(tmp.dir, 'half.json');
  await run(
    process.execPath,
    [UPLOAD, clip.out, '--url', server.url, '--prefix', queue, '--fps', String(FPS / 2), '--out', out, '--timeout', '90'],
    { timeout: 120_000 },
  );
  const doc = JSON.parse(readFileSync(out, 'utf8'));
  assert.equal(doc.done.fps, FPS / 2);
  assert.equal(doc.frames.length, FRAMES / 2);
  assert.match(doc.video_id, /^clip-[0-9a-f]{8}$/, 'a fresh video id by default');
});

test('without ffmpeg on PATH it says what to install', async () => {
  const err = await run(process.execPath, [UPLOAD, clip.out, '--url', server.url], {
    timeout: 30_000,
    env: { PATH: '/nonexistent' },
  }).catch((e) => e);
  assert.equal(err.code, 1);
  assert.match(err.stderr, /ffprobe is not on PATH: this needs ffmpeg and ffprobe \(Debian\/Ubuntu: apt-get install ffmpeg/);
});
