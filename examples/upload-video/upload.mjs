#!/usr/bin/env node
// From an mp4 to tracked people: extracts the video's frames with ffmpeg, submits them to the
// hmr2-worker queue as one tracked video, waits for its output with progress, writes the tracked
// frames and the summary as JSON, and prints one line per track.
//
//   node examples/upload-video/upload.mjs VIDEO.mp4 [--url redis://...] [--fps F] [--video-id ID]
//        [--out tracks.json] [--prefix hmr2] [--shards N] [--cluster] [--vertices] [--timeout S]
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, extname, join } from 'node:path';
import { parseArgs } from 'node:util';

import { Client } from '@hmr2/client';

const USAGE = `usage: upload.mjs VIDEO [options]

Extracts VIDEO's frames with ffmpeg, submits them to hmr2-worker as one tracked video, waits for
the tracked output and writes it as JSON.

options:
  --url URL        Redis URL; several, comma-separated, are cluster seeds
                   (default: $HMR2_URL, else redis://127.0.0.1:6379)
  --fps F          sample the video at F frames per second (default: every frame, at the
                   video's own rate as ffprobe reads it)
  --video-id ID    the video's id (default: the file's name and a random suffix; each upload
                   needs its own)
  --out FILE       where the JSON goes (default: <video name>.tracks.json)
  --prefix P       the queue's key prefix, the workers' queue.prefix (default: hmr2)
  --shards N       the queue's shards, the workers' queue.shards (default: 1)
  --cluster        Redis Cluster (implied by several URLs)
  --vertices       ask for the 6890 mesh vertices of each person (large)
  --timeout S      give up after S seconds without the video's end (default: 3600)
  -h, --help       this text`;

class UsageError extends Error {}

function options(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        url: { type: 'string' },
        fps: { type: 'string' },
        'video-id': { type: 'string' },
        out: { type: 'string' },
        prefix: { type: 'string', default: 'hmr2' },
        shards: { type: 'string', default: '1' },
        cluster: { type: 'boolean', default: false },
        vertices: { type: 'boolean', default: false },
        timeout: { type: 'string', default: '3600' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    throw new UsageError(e.message);
  }
  const { values, positionals } = parsed;
  if (values.help) return null;
  if (positionals.length !== 1) throw new UsageError('give exactly one video file');
  const number = (name, min) => {
    if (values[name] === undefined) return undefined;
    const n = Number(values[name]);
    if (!Number.isFinite(n) || n <= min) throw new UsageError(`--${name} must be a number above ${min}, got ${values[name]}`);
    return n;
  };
  const shards = number('shards', 0);
  if (!Number.isInteger(shards)) throw new UsageError(`--shards must be a whole number, got ${values.shards}`);
  const video = positionals[0];
  const name = basename(video, extname(video));
  const urls = (values.url ?? process.env.HMR2_URL ?? 'redis://127.0.0.1:6379').split(',').filter(Boolean);
  return {
    video,
    urls,
    cluster: values.cluster || urls.length > 1,
    fps: number('fps', 0),
    videoId: values['video-id'] ?? `${name}-${randomBytes(4).toString('hex')}`,
    out: values.out ?? `${name}.tracks.json`,
    prefix: values.prefix,
    shards,
    vertices: values.vertices,
    timeoutMs: number('timeout', 0) * 1000,
  };
}

/** Runs `cmd args`; resolves with its stdout, rejects with its stderr; a clear error when it is not installed. */
function tool(cmd, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', (e) => {
      if (e.code === 'ENOENT') {
        reject(
          new Error(
            `${cmd} is not on PATH: this needs ffmpeg and ffprobe (Debian/Ubuntu: apt-get install ffmpeg; ` +
              'macOS: brew install ffmpeg)',
          ),
        );
      } else reject(e);
    });
    child.on('close', (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} failed (exit ${code}): ${err.trim().split('\n').slice(-3).join('\n')}`));
    });
  });
}

/** The video's frame rate as ffprobe reads it (its average rate, else its base rate). */
async function probeFps(video) {
  const out = await tool('ffprobe', [
    '-v', 'error', '-select_streams', 'v:0',
    '-show_entries', 'stream=avg_frame_rate,r_frame_rate', '-of', 'json', video,
  ]);
  const stream = JSON.parse(out).streams?.[0];
  if (!stream) throw new Error(`${video} has no video stream`);
  for (const rate of [stream.avg_frame_rate, stream.r_frame_rate]) {
    const [num, den] = String(rate ?? '').split('/').map(Number);
    const fps = den ? num / den : num;
    if (Number.isFinite(fps) && fps > 0) return fps;
  }
  throw new Error(`ffprobe reads no frame rate for ${video}: give one with --fps`);
}

/** Writes the video's frames into `dir` as 000001.jpg, 000002.jpg, ... (at `fps` when given). */
async function extract(video, dir, fps) {
  const filter = fps === undefined ? [] : ['-vf', `fps=${fps}`];
  await tool('ffmpeg', ['-v', 'error', '-nostdin', '-i', video, ...filter, '-q:v', '2', join(dir, '%06d.jpg')]);
}

function progressPrinter() {
  const tty = process.stderr.isTTY;
  let lastShown = '';
  return (p) => {
    const total = p.frames ?? '?';
    const line =
      p.phase === 'frames'
        ? `frames answered: ${p.answered}/${total}` + (p.errors ? ` (${p.errors} with errors)` : '')
        : p.phase === 'tracking'
          ? `all ${total} frames answered; tracking`
          : 'done';
    if (line === lastShown) return;
    lastShown = line;
    if (tty) process.stderr.write(`\r\x1b[K${line}${p.phase === 'done' ? '\n' : ''}`);
    else if (p.phase !== 'frames' || p.answered === 0 || p.answered === p.frames || p.answered % 25 === 0) {
      process.stderr.write(`${line}\n`);
    }
  };
}

function summary(done) {
  const rows = [['track', 'first', 'last', 'frames', 'seen', 'interpolated']];
  for (const t of done.tracks ?? []) {
    rows.push([t.track_id, t.first_frame, t.last_frame, t.frames, t.frames - t.interpolated_frames, t.interpolated_frames].map(String));
  }
  const width = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => r.map((cell, c) => cell.padStart(width[c])).join('  ')).join('\n');
}

async function main(argv) {
  const opts = options(argv);
  if (opts === null) {
    console.log(USAGE);
    return 0;
  }
  try {
    if (!statSync(opts.video).isFile()) throw new Error('not a file');
  } catch (e) {
    throw new UsageError(`cannot read ${opts.video}: ${e.message}`);
  }
  const fps = opts.fps ?? (await probeFps(opts.video));
  const dir = mkdtempSync(join(tmpdir(), 'hmr2-upload-'));
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  process.once('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  let client;
  try {
    process.stderr.write(`extracting frames of ${opts.video} at ${Number(fps.toFixed(3))} fps\n`);
    await extract(opts.video, dir, opts.fps);
    client = await Client.connect({
      url: opts.urls.length > 1 ? opts.urls : opts.urls[0],
      cluster: opts.cluster,
      prefix: opts.prefix,
      shards: opts.shards,
    });
    const sent = await client.submitVideo(opts.videoId, dir, fps, {
      vertices: opts.vertices,
      onProgress: (n, total) => process.stderr.write(`sent ${n}/${total} frames\n`),
    });
    cleanup();
    process.stderr.write(`video ${sent.videoId}: ${sent.frames} frames queued on shard ${sent.shard}; output on ${sent.output}\n`);
    const out = await client.waitVideo(sent, { timeoutMs: opts.timeoutMs, onProgress: progressPrinter() });
    const doc = { video_id: sent.videoId, source: opts.video, fps, frames: out.frames, done: out.done };
    if (out.unreadable.length > 0) doc.unreadable = out.unreadable;
    writeFileSync(opts.out, JSON.stringify(doc) + '\n');
    const d = out.done;
    console.log(
      `video ${d.video_id}: ${d.status}, ${d.frames} frames (${d.ok_frames} ok, ${d.error_frames} errors, ` +
        `${d.missing_frames} missing), ${d.tracks?.length ?? 0} tracks; written to ${opts.out}`,
    );
    console.log(summary(d));
    return d.status === 'ok' ? 0 : 2;
  } finally {
    cleanup();
    await client?.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`upload.mjs: ${e.message}\n`);
    if (e instanceof UsageError) process.stderr.write(`\n${USAGE}\n`);
    process.exit(1);
  },
);
