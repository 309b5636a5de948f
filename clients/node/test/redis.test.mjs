// The producer API against a real redis-server and a real 3-master Redis Cluster: the same
// operations on both. What a worker would write (results, a video's output) is written here by
// hand, so these tests need no worker; test/e2e.test.mjs runs a real one.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Client, InvalidJobError, shardOf, VideoTimeoutError } from '../dist/index.js';
import { prefix, startCluster, startServer, tempDir, testFrame } from './support.mjs';

const SHARDS = 3;

function result(jobId, videoId, frameNumber, extra = {}) {
  return {
    v: 1,
    job_id: jobId,
    entry_id: `1-${frameNumber}`,
    video_id: videoId,
    frame_number: frameNumber,
    status: 'ok',
    image_size: [96, 72],
    people: [],
    timings_ms: { queue_wait: 1, decode: 1, inference: 1, total: 3 },
    worker: 'test/1',
    device: 'cpu',
    model: 'hmr2 test',
    ...extra,
  };
}

function trackedFrame(videoId, n) {
  const eye = [
    [1, 0, 0],
    [0, 1, 0],
    [0, 0, 1],
  ];
  return {
    v: 1,
    video_id: videoId,
    frame_number: n,
    status: 'ok',
    people: [
      {
        track_id: 1,
        box: [n, 0, n + 10, 20],
        box_source: 'frame',
        global_orient: eye,
        body_pose: Array(23).fill(eye),
        betas: Array(10).fill(0),
        pred_cam_t_full: [0, 0, 20],
        focal_length: 5000,
        keypoints_2d: Array(44).fill([1, 2]),
        keypoints_3d: Array(44).fill([0, 0, 1]),
        interpolated: false,
      },
    ],
  };
}

function done(videoId, frames) {
  return {
    v: 1,
    video_id: videoId,
    status: 'ok',
    frames,
    ok_frames: frames,
    error_frames: 0,
    missing_frames: 0,
    fps: 12.5,
    tracks: [{ track_id: 1, first_frame: 0, last_frame: frames - 1, frames, interpolated_frames: 0 }],
    timings_ms: { tracking: 1.5, total: 100 },
  };
}

async function fields(redis, stream) {
  const entries = await redis.xrangeBuffer(stream, '-', '+');
  return entries.map(([id, f]) => {
    const map = {};
    for (let i = 0; i < f.length; i += 2) map[f[i].toString()] = f[i + 1];
    return { id: id.toString(), map };
  });
}

async function collect(iter) {
  const out = [];
  for await (const x of iter) out.push(x);
  return out;
}

for (const kind of ['node', 'cluster']) {
  describe(`on a ${kind === 'node' ? 'single redis-server' : '3-master Redis Cluster'}`, () => {
    let server;
    const clients = [];
    /** A client of its own prefix; sharded (3 shards) on the cluster. */
    const client = async (name, shards = kind === 'cluster' ? SHARDS : 1) => {
      const c = await Client.connect(
        kind === 'cluster' ? { url: server.urls, prefix: prefix(name), shards } : { url: server.url, prefix: prefix(name), shards },
      );
      clients.push(c);
      return c;
    };

    before(async () => {
      server = kind === 'cluster' ? await startCluster() : await startServer();
    });
    after(async () => {
      await Promise.all(clients.map((c) => c.close()));
      await server?.stop();
    });

    test('a frame goes to its shard with its job JSON and raw image bytes; base64 on request', async () => {
      const c = await client('frame');
      const image = testFrame(0);
      const id = await c.addFrame(image, { jobId: 'v:0', videoId: 'v', frameNumber: 0, boxes: [[1, 2, 30.5, 40]], vertices: true });
      const keys = c.keysFor('v', 'v:0');
      assert.equal(keys.shard, kind === 'cluster' ? shardOf('v', SHARDS) : 0);
      const b64id = await c.addFrame(image, { jobId: 'v:1', videoId: 'v', frameNumber: 1, raw: false });
      const got = await fields(c.redis, keys.jobs);
      assert.deepEqual(
        got.map((e) => e.id),
        [id, b64id],
      );
      assert.deepEqual(JSON.parse(got[0].map.job.toString()), {
        v: 1,
        job_id: 'v:0',
        video_id: 'v',
        frame_number: 0,
        boxes: [[1, 2, 30.5, 40]],
        include: ['vertices'],
      });
      assert.equal(got[0].map.image.compare(image), 0);
      assert.equal(got[1].map.image, undefined);
      assert.equal(Buffer.from(JSON.parse(got[1].map.job.toString()).image_base64, 'base64').compare(image), 0);
    });

    test('many frames are pipelined to their shards, in order, with progress', async () => {
      const c = await client('many');
      const frames = Array.from({ length: 150 }, (_, n) => ({
        image: Buffer.from([n & 0xff, 1, 2]),
        jobId: `job-${n}`,
        videoId: `video-${n % 5}`,
        frameNumber: n,
      }));
      const progress = [];
      const ids = await c.addFrames(frames, { onProgress: (added, total) => progress.push([added, total]) });
      assert.equal(ids.length, 150);
      assert.equal(progress.at(-1)[0], 150);
      assert.ok(progress.every(([, total]) => total === 150));
      assert.ok(progress.every(([added], i) => i === 0 || added > progress[i - 1][0]));
      let seen = 0;
      for (const keys of c.layout.shards) {
        const entries = await fields(c.redis, keys.jobs);
        seen += entries.length;
        for (const e of entries) {
          const job = JSON.parse(e.map.job.toString());
          const n = job.frame_number;
          assert.equal(c.keysFor(job.video_id, job.job_id).shard, keys.shard);
          assert.equal(ids[n], e.id, `frame ${n}'s entry id`);
          assert.deepEqual([...e.map.image], [n & 0xff, 1, 2]);
        }
      }
      assert.equal(seen, 150);
      if (kind === 'cluster') {
        const used = c.layout.shards.filter((k) => frames.some((f) => c.keysFor(f.videoId, f.jobId).shard === k.shard));
        assert.ok(used.length > 1, 'the test videos spread over several shards');
      }
      // A bad frame anywhere in the list: nothing is sent.
      const before = (await Promise.all(c.layout.shards.map((k) => c.redis.xlen(k.jobs)))).reduce((a, b) => a + b);
      await assert.rejects(
        c.addFrames([frames[0], { ...frames[1], replyTo: 'elsewhere' }]),
        (e) => e instanceof InvalidJobError && e.message.includes('reply_to'),
      );
      const after = (await Promise.all(c.layout.shards.map((k) => c.redis.xlen(k.jobs)))).reduce((a, b) => a + b);
      assert.equal(after, before);
    });

    test('a video from Buffers, paths, a directory or an iterable: every frame carries the same video object', async () => {
      const c = await client('video');
      const images = Array.from({ length: 70 }, (_, n) => testFrame(n % 8));
      const tmp = tempDir('frames');
      try {
        // Written out of name order on purpose, with a file that is no image.
        for (let n = images.length - 1; n >= 0; n--) writeFileSync(join(tmp.dir, `${String(n).padStart(4, '0')}.png`), images[n]);
        writeFileSync(join(tmp.dir, 'notes.txt'), 'not a frame');
        const paths = images.map((_, n) => join(tmp.dir, `${String(n).padStart(4, '0')}.png`));
        async function* lazy() {
          for (const img of images) yield img;
        }
        const sources = [
          ['buffers', images, {}],
          ['paths', paths, {}],
          ['directory', tmp.dir, {}],
          ['iterable', images.values(), {}],
          ['async iterable with its length', lazy(), { frames: images.length }],
        ];
        for (const [what, frames, extra] of sources) {
          const videoId = `clip-${what.replaceAll(' ', '-')}`;
          const progress = [];
          const sent = await c.submitVideo(videoId, frames, 12.5, {
            ...extra,
            vertices: true,
            onProgress: (n, total) => progress.push([n, total]),
          });
          const keys = c.layout.videoKeys(videoId);
          assert.equal(sent.shard, keys.shard, what);
          assert.equal(sent.frames, 70, what);
          assert.equal(sent.output, `${keys.results}:video:${videoId}`, what);
          assert.equal(sent.resultsStream, keys.results, what);
          assert.deepEqual(progress, [
            [64, 70],
            [70, 70],
          ]);
          const entries = (await fields(c.redis, keys.jobs)).filter((e) => JSON.parse(e.map.job.toString()).video_id === videoId);
          assert.deepEqual(
            entries.map((e) => e.id),
            sent.entryIds,
            what,
          );
          entries.forEach((e, n) => {
            const job = JSON.parse(e.map.job.toString());
            assert.deepEqual(job, {
              v: 1,
              job_id: `${videoId}:${n}`,
              video_id: videoId,
              frame_number: n,
              include: ['vertices'],
              video: { frames: 70, fps: 12.5 },
            });
            assert.equal(e.map.image.compare(images[n]), 0, `${what}: frame ${n}'s bytes`);
          });
        }
      } finally {
        tmp.done();
      }
    });

    test('a video with its own streams and base64 images', async () => {
      const c = await client('own');
      const keys = c.layout.videoKeys('mine');
      const sent = await c.submitVideo('mine', [testFrame(0), testFrame(1)], 30, {
        replyTo: `${keys.results}:out`,
        frameReplyTo: `${keys.results}:per-frame`,
        raw: false,
      });
      assert.equal(sent.output, `${keys.results}:out`);
      assert.equal(sent.resultsStream, `${keys.results}:per-frame`);
      const entries = await fields(c.redis, keys.jobs);
      const job = JSON.parse(entries[1].map.job.toString());
      assert.deepEqual(job.video, { frames: 2, fps: 30, reply_to: `${keys.results}:out` });
      assert.equal(job.reply_to, `${keys.results}:per-frame`);
      assert.equal(Buffer.from(job.image_base64, 'base64').compare(testFrame(1)), 0);
      assert.equal(entries[1].map.image, undefined);
    });

    test('a video that cannot be answered is refused before any frame is added', async () => {
      const c = await client('refused');
      const keys = c.layout.videoKeys('v');
      const other = kind === 'cluster' ? c.layout.shard(keys.shard + 1).results : 'elsewhere:results';
      const cases = [
        [() => c.submitVideo('v', [], 30), 'no frames'],
        [() => c.submitVideo('v', [testFrame(0)], 0), 'fps'],
        [() => c.submitVideo('v', [testFrame(0)], Infinity), 'fps'],
        [() => c.submitVideo('', [testFrame(0)], 30), 'video id'],
        [() => c.submitVideo('x'.repeat(255), [testFrame(0), testFrame(1)], 30), 'room for'],
        [() => c.submitVideo('v', [testFrame(0)], 30, { replyTo: other }), 'reply_to'],
        [() => c.submitVideo('v', [testFrame(0)], 30, { frameReplyTo: `${keys.results}-b` }), 'frameReplyTo'],
        [() => c.submitVideo('v', '/nonexistent/frames', 30), 'frames directory'],
        [() => c.submitVideo('v', [testFrame(0), 42], 30), 'Buffer or a file path'],
        [() => c.submitVideo('v', [testFrame(0)], 30, { frames: 2 }), 'frames says 2'],
      ];
      for (const [call, text] of cases) {
        await assert.rejects(call(), (e) => e instanceof InvalidJobError && e.message.includes(text), text);
      }
      assert.equal(await c.redis.xlen(keys.jobs), 0, 'nothing was added');
      // Frames that run out early: those sent stay queued, the error says so.
      async function* three() {
        for (let n = 0; n < 3; n++) yield testFrame(n);
      }
      await assert.rejects(c.submitVideo('short', three(), 30, { frames: 100 }), /100 frames were announced, 3 came \(frames 0 to 2 are queued\)/);
      assert.equal(await c.redis.xlen(c.layout.videoKeys('short').jobs), 3);
      // Frames past the announced length are not read.
      let read = 0;
      function* many() {
        for (;;) {
          read++;
          yield testFrame(0);
        }
      }
      const sent = await c.submitVideo('capped', many(), 30, { frames: 5 });
      assert.equal(sent.entryIds.length, 5);
      assert.equal(read, 5);
    });

    test('results come page by page without duplicates; unreadable entries come as values', async () => {
      const c = await client('results');
      const stream = c.layout.videoKeys('v').results;
      const add = (f) => c.redis.xadd(stream, '*', ...f);
      await add(['job_id', 'v:0', 'result', JSON.stringify(result('v:0', 'v', 0))]);
      await add(['job_id', 'w:0', 'result', JSON.stringify(result('w:0', 'w', 0))]);
      const noResult = await add(['job_id', 'v:x']);
      const notUtf8 = await add(['job_id', 'v:y', 'result', Buffer.from([0x7b, 0xff, 0xfe, 0x7d])]);
      const notJson = await add(['job_id', 'v:z', 'result', '{"v":1,']);
      const badStatus = await add(['job_id', 'v:s', 'result', JSON.stringify(result('v:s', 'v', 9, { status: 'maybe' }))]);
      await add(['job_id', 'v:0', 'result', JSON.stringify(result('v:0', 'v', 0, { worker: 'other/2' }))]);
      await add([
        'job_id',
        'v:1',
        'result',
        JSON.stringify(result('v:1', 'v', 1, { status: 'error', error: { code: 'some_new_code', message: 'later' }, people: undefined })),
      ]);
      const unknown = JSON.stringify(result(null, undefined, 0, { job_id: null, entry_id: '5-5', frame_number: undefined }));
      await add(['job_id', '', 'result', unknown]);
      await add(['job_id', '', 'result', unknown]);

      const all = await collect(c.results(stream, { count: 3 }));
      const ok = all.filter((e) => e.result);
      assert.deepEqual(
        ok.map((e) => e.jobId),
        ['v:0', 'w:0', 'v:1', ''],
        'one result per job (the first), in stream order',
      );
      assert.equal(ok[0].result.worker, 'test/1');
      assert.equal(ok[2].result.error.code, 'some_new_code');
      const bad = all.filter((e) => e.unreadable);
      assert.deepEqual(
        bad.map((e) => e.entryId),
        [noResult, notUtf8, notJson, badStatus],
      );
      assert.ok(bad.every((e) => e.unreadable.stream === stream && e.unreadable.entryId === e.entryId));
      assert.match(bad[0].unreadable.reason, /no `result` field/);
      assert.match(bad[1].unreadable.reason, /`result`/);
      assert.match(bad[2].unreadable.reason, /not a result/);
      assert.match(bad[3].unreadable.reason, /status/);

      const kept = await collect(c.results(stream, { keepDuplicates: true }));
      assert.equal(kept.filter((e) => e.result).length, 6);
      const mine = await collect(c.results(undefined, { videoId: 'v' }));
      assert.deepEqual(
        mine.filter((e) => e.result).map((e) => e.jobId),
        ['v:0', 'v:1'],
      );
      const page = await c.readResults(stream, { after: noResult, count: 2 });
      assert.deepEqual(
        page.map((e) => e.entryId),
        [notUtf8, notJson],
      );

      // Following the stream: entries added after the reader started come too.
      const end = (await c.readResults(stream)).at(-1).entryId;
      const following = collect(c.results(stream, { after: end, follow: true, timeoutMs: 3000 }));
      await new Promise((r) => setTimeout(r, 300));
      await add(['job_id', 'v:2', 'result', JSON.stringify(result('v:2', 'v', 2))]);
      await add(['job_id', 'v:2', 'result', JSON.stringify(result('v:2', 'v', 2))]);
      const later = await following;
      assert.deepEqual(
        later.map((e) => e.jobId),
        ['v:2'],
      );
    });

    test('waitVideo returns the tracked frames in order and the done summary, with progress', async () => {
      const c = await client('wait');
      const n = 4;
      const sent = await c.submitVideo('clip', Array.from({ length: n }, (_, i) => testFrame(i)), 12.5);
      const keys = c.layout.videoKeys('clip');
      // What the workers would write: each frame's result (one twice, one of another video in
      // between), then the video's output whole, with an unreadable entry and another video's.
      const worker = (async () => {
        await new Promise((r) => setTimeout(r, 300));
        for (let f = 0; f < n; f++) {
          await c.redis.xadd(keys.results, '*', 'job_id', `clip:${f}`, 'result', JSON.stringify(result(`clip:${f}`, 'clip', f, f === 2 ? { status: 'error', error: { code: 'invalid_image', message: 'm' } } : {})));
          await c.redis.xadd(keys.results, '*', 'job_id', 'other:0', 'result', JSON.stringify(result('other:0', 'other', 0)));
          if (f === 1) await c.redis.xadd(keys.results, '*', 'job_id', 'clip:1', 'result', JSON.stringify(result('clip:1', 'clip', 1)));
          await new Promise((r) => setTimeout(r, 50));
        }
        await new Promise((r) => setTimeout(r, 200));
        const multi = c.redis.multi();
        multi.xadd(sent.output, '*', 'frame', JSON.stringify(trackedFrame('clip', 0)));
        multi.xadd(sent.output, '*', 'junk', 'x');
        multi.xadd(sent.output, '*', 'frame', JSON.stringify(trackedFrame('another', 0)));
        for (let f = 1; f < n; f++) multi.xadd(sent.output, '*', 'frame', JSON.stringify(trackedFrame('clip', f)));
        multi.xadd(sent.output, '*', 'done', JSON.stringify(done('clip', n)));
        await multi.exec();
      })();
      const progress = [];
      const out = await c.waitVideo(sent, { timeoutMs: 20_000, onProgress: (p) => progress.push(p) });
      await worker;
      assert.deepEqual(
        out.frames.map((f) => f.frame_number),
        [0, 1, 2, 3],
      );
      assert.equal(out.frames[3].people[0].track_id, 1);
      assert.equal(out.done.status, 'ok');
      assert.equal(out.done.tracks[0].last_frame, 3);
      assert.equal(out.unreadable.length, 1);
      assert.match(out.unreadable[0].reason, /neither a `frame` nor a `done`/);
      // Progress: counts only grow, a frame answered twice counts once, tracking once all are in.
      assert.deepEqual(progress[0], { videoId: 'clip', phase: 'frames', frames: n, answered: 0, ok: 0, errors: 0 });
      const answered = progress.map((p) => p.answered);
      assert.deepEqual(answered, [...answered].sort((a, b) => a - b));
      assert.ok(progress.every((p) => p.answered <= n));
      const tracking = progress.find((p) => p.phase === 'tracking');
      assert.ok(tracking, 'a tracking phase was reported');
      assert.deepEqual([tracking.answered, tracking.ok, tracking.errors], [4, 3, 1]);
      const last = progress.at(-1);
      assert.equal(last.phase, 'done');
      assert.equal(last.output, out);

      // A video already done returns at once, from its id alone; the iterator ends with it.
      const again = await c.waitVideo('clip', { timeoutMs: 5000 });
      assert.deepEqual(again.frames, out.frames);
      const steps = await collect(c.videoProgress('clip', { timeoutMs: 5000, frames: n }));
      assert.equal(steps.at(-1).phase, 'done');
      assert.equal(steps.at(-1).output.frames.length, n);
    });

    test('progress follows the frames own result stream, step by step, into tracking and done', async () => {
      const c = await client('steps');
      const keys = c.layout.videoKeys('own');
      const sent = await c.submitVideo('own', [testFrame(0), testFrame(1)], 25, { frameReplyTo: `${keys.results}:own` });
      const steps = c.videoProgress(sent, { timeoutMs: 20_000 });
      const next = async () => (await steps.next()).value;
      assert.deepEqual(await next(), { videoId: 'own', phase: 'frames', frames: 2, answered: 0, ok: 0, errors: 0 });
      // A result on the shard's default stream is not this video's progress.
      await c.redis.xadd(keys.results, '*', 'job_id', 'own:0', 'result', JSON.stringify(result('own:0', 'own', 0)));
      await c.redis.xadd(sent.resultsStream, '*', 'job_id', 'own:1', 'result', JSON.stringify(result('own:1', 'own', 1)));
      assert.deepEqual(await next(), { videoId: 'own', phase: 'frames', frames: 2, answered: 1, ok: 1, errors: 0 });
      await c.redis.xadd(sent.resultsStream, '*', 'job_id', 'own:0', 'result', JSON.stringify(result('own:0', 'own', 0)));
      assert.equal((await next()).phase, 'tracking');
      await c.redis.xadd(sent.output, '*', 'frame', JSON.stringify(trackedFrame('own', 0)));
      await c.redis.xadd(sent.output, '*', 'frame', JSON.stringify(trackedFrame('own', 1)));
      await c.redis.xadd(sent.output, '*', 'done', JSON.stringify(done('own', 2)));
      const last = await next();
      assert.equal(last.phase, 'done');
      assert.equal(last.output.frames.length, 2);
      assert.equal((await steps.next()).done, true);
    });

    test('a connection of the caller is used as it is and left open', async () => {
      const { Redis, Cluster } = await import('ioredis');
      const own =
        kind === 'cluster'
          ? new Cluster(server.ports.map((port) => ({ host: '127.0.0.1', port })))
          : new Redis(server.url);
      const c = new Client({ redis: own, prefix: prefix('own-connection'), shards: kind === 'cluster' ? SHARDS : 1 });
      assert.equal(c.cluster, kind === 'cluster');
      assert.equal(c.layout.shard(0).jobs.startsWith('{'), kind === 'cluster');
      await c.addFrame(testFrame(0), { jobId: 'x' });
      await c.close();
      assert.equal(await own.xlen(c.keysFor(undefined, 'x').jobs), 1, 'still open after close()');
      own.disconnect();
    });

    test('waitVideo gives up with a clear error at its timeout, and stops on abort', async () => {
      const c = await client('timeout');
      const started = Date.now();
      await assert.rejects(
        c.waitVideo('never', { timeoutMs: 400 }),
        (e) => e instanceof VideoTimeoutError && e.videoId === 'never' && /no `done` entry .* within 400 ms/.test(e.message),
      );
      assert.ok(Date.now() - started < 10_000);
      const abort = new AbortController();
      setTimeout(() => abort.abort(new Error('stopped by the caller')), 200);
      await assert.rejects(c.waitVideo('never', { timeoutMs: 60_000, signal: abort.signal }), /stopped by the caller/);
    });

    test('modelInfo reads the model hash, each field from its JSON', async () => {
      const c = await client('model');
      assert.equal(await c.modelInfo(), null);
      await c.redis.hset(c.layout.model, {
        meta: JSON.stringify({ name: 'tiny', contract: 'hmr2/1' }),
        faces: JSON.stringify([
          [0, 1, 2],
          [2, 1, 3],
        ]),
        keypoint_names: JSON.stringify(['nose', 'neck']),
        topology: JSON.stringify('synthetic'),
      });
      const info = await c.modelInfo();
      assert.equal(info.meta.name, 'tiny');
      assert.deepEqual(info.faces[1], [2, 1, 3]);
      assert.deepEqual(info.keypoint_names, ['nose', 'neck']);
      assert.equal(info.topology, 'synthetic');
      await c.redis.hset(c.layout.model, 'parents', '[1,');
      await assert.rejects(c.modelInfo(), /field parents is not JSON/);
    });
  });
}

test('an unreachable Redis is reported with its (redacted) URL', async () => {
  const { freePort } = await import('./support.mjs');
  const port = await freePort();
  await assert.rejects(
    Client.connect({ url: `redis://user:secret@127.0.0.1:${port}`, redisOptions: { maxRetriesPerRequest: 0, retryStrategy: () => null } }, 3000),
    (e) => e.message.includes(`cannot reach Redis at redis://user:***@127.0.0.1:${port}`) && !e.message.includes('secret'),
  );
});
