// Test support: throwaway redis-servers (one node, a 3-master cluster) on free ports, the real
// worker binary, small PNG frames. Every process started here is killed by `stop()`, and on exit.
import { spawn, execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, createWriteStream } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { deflateSync } from 'node:zlib';

import { crc32 } from '../dist/index.js';

const run = promisify(execFile);
export const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_ROOT = resolve(PACKAGE_DIR, '..', '..');

const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** A TCP port nobody listens on now (and, with `bus`, whose +10000 cluster-bus port is free too). */
export async function freePort(bus = false) {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise((ok, fail) => {
      const s = createServer();
      s.once('error', fail);
      s.listen(0, '127.0.0.1', () => {
        const { port } = s.address();
        s.close(() => ok(port));
      });
    });
    if (!bus) return port;
    if (port + 10000 > 65535) continue;
    const busFree = await new Promise((ok) => {
      const s = createServer();
      s.once('error', () => ok(false));
      s.listen(port + 10000, '127.0.0.1', () => s.close(() => ok(true)));
    });
    if (busFree) return port;
  }
  throw new Error('no free port pair for a cluster node');
}

/** Resolves when `child`'s stdout shows `text`; rejects after `ms` or when it exits. */
function waitForLine(child, text, ms, what) {
  return new Promise((ok, fail) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error(`${what} not ready within ${ms} ms:\n${out}`)), ms);
    const onData = (chunk) => {
      out += chunk;
      if (out.includes(text)) {
        clearTimeout(timer);
        child.stdout.off('data', onData);
        child.stdout.resume();
        ok();
      }
    };
    child.stdout.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`${what} exited (${code}) before it was ready:\n${out}`));
    });
  });
}

function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

async function kill(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((ok) => child.once('exit', ok));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await gone;
  clearTimeout(timer);
}

async function startRedis(port, extra = [], dir) {
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extra];
  if (dir) args.push('--dir', dir);
  const child = track(spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'inherit'] }));
  child.stdout.setEncoding('utf8');
  await waitForLine(child, 'Ready to accept connections', 20_000, `redis-server on ${port}`);
  return child;
}

/** A throwaway redis-server on a free port: `{ url, port, stop() }`. */
export async function startServer() {
  const port = await freePort();
  const child = await startRedis(port);
  return { url: `redis://127.0.0.1:${port}`, port, stop: () => kill(child) };
}

async function cli(port, ...args) {
  const { stdout } = await run('redis-cli', ['-p', String(port), ...args], { timeout: 30_000 });
  return stdout;
}

/**
 * A throwaway Redis Cluster of 3 masters and no replicas, each on a free port:
 * `{ urls, ports, stop() }`, returned once every node says `cluster_state:ok`.
 */
export async function startCluster() {
  const dir = mkdtempSync(join(tmpdir(), 'hmr2-node-cluster-'));
  const ports = [];
  const nodes = [];
  try {
    for (let i = 0; i < 3; i++) {
      const port = await freePort(true);
      ports.push(port);
      nodes.push(
        await startRedis(
          port,
          ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '5000'],
          dir,
        ),
      );
    }
    await run(
      'redis-cli',
      ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'],
      { timeout: 60_000 },
    );
    const deadline = Date.now() + 30_000;
    for (const port of ports) {
      for (;;) {
        const info = await cli(port, 'cluster', 'info');
        if (info.includes('cluster_state:ok')) break;
        if (Date.now() > deadline) throw new Error(`cluster node ${port} not ok within 30 s:\n${info}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  } catch (e) {
    await Promise.all(nodes.map(kill));
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    urls: ports.map((p) => `redis://127.0.0.1:${p}`),
    ports,
    stop: async () => {
      await Promise.all(nodes.map(kill));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The worker binary: `HMR2_WORKER_BIN`, else `<repo>/target/debug/hmr2-worker`; a clear failure when missing. */
export function workerBinary() {
  const bin = process.env.HMR2_WORKER_BIN ?? join(REPO_ROOT, 'target', 'debug', 'hmr2-worker');
  if (!existsSync(bin)) {
    throw new Error(
      `the worker binary ${bin} is missing: build it first (\`cargo build\` at the repository root, ` +
        'or `make test`, which builds it before these tests), or point HMR2_WORKER_BIN at one',
    );
  }
  return bin;
}

/** The tiny test model (exported by `scripts/setup`). */
export function tinyModel() {
  const model = process.env.HMR2_TEST_MODEL ?? join(REPO_ROOT, 'models', 'artifacts', 'hmr2-tiny.pt');
  if (!existsSync(model)) {
    throw new Error(`the tiny test model ${model} is missing: run \`scripts/setup\` (or \`make setup\`) first`);
  }
  return model;
}

/**
 * A real worker (`hmr2-worker run`) on the CPU with the tiny model, on `url` under `prefix`;
 * its log goes to `$TMPDIR/<prefix>.log`. `env` adds or overrides `HMR2_*` settings.
 */
export async function startWorker({ url, prefix, cluster = false, shards = 1, env = {} }) {
  const bin = workerBinary();
  const log = join(tmpdir(), `${prefix}.log`);
  const logStream = createWriteStream(log);
  await new Promise((ok) => logStream.once('open', ok));
  const child = track(
    spawn(bin, ['run'], {
      stdio: ['ignore', 'ignore', logStream],
      env: {
        ...process.env,
        OMP_WAIT_POLICY: 'PASSIVE',
        HMR2_REDIS__URL: url,
        HMR2_REDIS__CLUSTER: String(cluster),
        HMR2_QUEUE__PREFIX: prefix,
        HMR2_QUEUE__SHARDS: String(shards),
        HMR2_QUEUE__BLOCK_MS: '200',
        HMR2_QUEUE__MAX_BATCH: '8',
        HMR2_MODEL__PATH: tinyModel(),
        HMR2_MODEL__DEVICE: 'cpu',
        HMR2_HTTP__LISTEN: '127.0.0.1:0',
        HMR2_PIPELINE__DECODE_THREADS: '1',
        HMR2_SHUTDOWN__GRACE_SECONDS: '5',
        ...env,
      },
    }),
  );
  return {
    log,
    child,
    stop: async () => {
      await kill(child);
      logStream.end();
    },
  };
}

/** A PNG of `width`×`height` RGB pixels from `pixel(x, y) -> [r, g, b]`. */
export function png(width, height, pixel) {
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1);
    raw[row] = 0;
    for (let x = 0; x < width; x++) {
      const [r, g, b] = pixel(x, y);
      raw[row + 1 + x * 3] = r;
      raw[row + 2 + x * 3] = g;
      raw[row + 3 + x * 3] = b;
    }
  }
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** Frame `n` of a small moving test picture: a bright figure-like block crossing a gradient. */
export function testFrame(n, width = 96, height = 72) {
  const x0 = 10 + n * 4;
  return png(width, height, (x, y) => {
    const inside = x >= x0 && x < x0 + 20 && y >= 10 && y < 62;
    return inside ? [230, 200, 170] : [(x * 255) / width, (y * 255) / height, 60];
  });
}

/** Polls `probe` until it returns something truthy; fails after `ms` naming `what`. */
export async function waitUntil(what, ms, probe) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A fresh key prefix for one test. */
let counter = 0;
export function prefix(name) {
  return `t-node-${process.pid}-${name}-${++counter}`;
}

/** A temporary directory, removed by `done()`. */
export function tempDir(name) {
  const dir = mkdtempSync(join(tmpdir(), `hmr2-node-${name}-`));
  return { dir, done: () => rmSync(dir, { recursive: true, force: true }) };
}
