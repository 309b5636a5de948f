// End to end against the real worker (HMR2_WORKER_BIN, else <repo>/target/debug/hmr2-worker) on
// the CPU with the tiny model: a tracked video submitted and waited for, its per-frame results
// read without duplicates, and the model hash. Once on a single redis-server, once on a 3-master
// Redis Cluster with the queue in 3 shards.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Client } from '../dist/index.js';
import { prefix, startCluster, startServer, startWorker, testFrame, waitUntil, workerBinary } from './support.mjs';

const FRAMES = 6;

for (const kind of ['node', 'cluster']) {
  describe(`with a real worker on a ${kind === 'node' ? 'single redis-server' : '3-shard Redis Cluster'}`, () => {
    let server;
    let worker;
    let client;

    before(async () => {
      workerBinary(); // fails here, clearly, when the binary is missing
      server = kind === 'cluster' ? await startCluster() : await startServer();
      const p = prefix(`e2e-${kind}`);
      worker =
        kind === 'cluster'
          ? await startWorker({ url: server.urls.join(','), prefix: p, cluster: true, shards: 3 })
          : await startWorker({ url: server.url, prefix: p });
      client = await Client.connect(
        kind === 'cluster' ? { url: server.urls, prefix: p, shards: 3 } : { url: server.url, prefix: p },
      );
      // The worker writes the model hash once it has loaded the model.
      await waitUntil(`the worker's model hash (worker log: ${worker.log})`, 60_000, () => client.modelInfo());
    });

    after(async () => {
      await client?.close();
      await worker?.stop();
      await server?.stop();
    });

    test('a tracked video is submitted, waited for with progress, and comes back in frame order', async () => {
      const images = Array.from({ length: FRAMES }, (_, n) => testFrame(n));
      const sent = await client.submitVideo('walk', images, 12);
      const progress = [];
      const out = await client.waitVideo(sent, { timeoutMs: 90_000, onProgress: (p) => progress.push(p) });
      assert.deepEqual(
        out.frames.map((f) => f.frame_number),
        [...Array(FRAMES).keys()],
      );
      for (const f of out.frames) {
        assert.equal(f.status, 'ok');
        assert.equal(f.video_id, 'walk');
        // No detector: one whole-frame person per frame, one track through the video.
        assert.equal(f.people.length, 1);
        assert.equal(f.people[0].track_id, 1);
        assert.equal(f.people[0].box_source, 'frame');
        assert.equal(f.people[0].keypoints_2d.length, 44);
      }
      assert.equal(out.done.status, 'ok');
      assert.deepEqual(
        [out.done.frames, out.done.ok_frames, out.done.error_frames, out.done.missing_frames, out.done.fps],
        [FRAMES, FRAMES, 0, 0, 12],
      );
      assert.deepEqual(
        out.done.tracks.map((t) => [t.track_id, t.first_frame, t.last_frame, t.frames]),
        [[1, 0, FRAMES - 1, FRAMES]],
      );
      assert.deepEqual(out.unreadable, []);
      assert.equal(progress[0].answered, 0);
      const last = progress.at(-1);
      assert.equal(last.phase, 'done');
      assert.equal(last.answered, FRAMES, 'every frame was seen answered before the end');
      assert.equal(last.ok, FRAMES);
    });

    test('per-frame results come once per job, even when a result is delivered twice', async () => {
      const stream = client.layout.videoKeys('walk').results;
      const first = await collect(client.results(undefined, { videoId: 'walk' }));
      assert.deepEqual(
        first.map((e) => e.result.frame_number).sort((a, b) => a - b),
        [...Array(FRAMES).keys()],
      );
      assert.ok(first.every((e) => e.result.status === 'ok' && e.result.device === 'cpu' && e.result.people.length === 1));
      // A duplicate, as a worker that crashed after publishing would leave: the same entry again.
      const [[, fields]] = await client.redis.xrangeBuffer(stream, first[2].entryId, first[2].entryId);
      await client.redis.xadd(stream, '*', ...fields);
      const again = await collect(client.results(stream, { videoId: 'walk' }));
      assert.equal(again.length, FRAMES);
      const all = await collect(client.results(stream, { videoId: 'walk', keepDuplicates: true }));
      assert.equal(all.length, FRAMES + 1);
    });

    test('a single frame with a box and vertices is answered on its reply stream', async () => {
      const keys = client.keysFor(undefined, 'still-1');
      const replyTo = `${keys.results}:stills`;
      await client.addFrame(testFrame(3), { jobId: 'still-1', boxes: [[8, 4, 60, 70]], vertices: true, replyTo });
      const [entry] = await waitUntil('the still frame result', 60_000, async () => {
        const got = await client.readResults(replyTo);
        return got.length > 0 ? got : null;
      });
      assert.equal(entry.jobId, 'still-1');
      assert.equal(entry.result.status, 'ok');
      assert.deepEqual(entry.result.image_size, [96, 72]);
      assert.equal(entry.result.people[0].box_source, 'job');
      assert.deepEqual(entry.result.people[0].box, [8, 4, 60, 70]);
      // One vertex per index the model hash's faces use.
      const info = await client.modelInfo();
      const highest = info.faces.flat().reduce((a, b) => Math.max(a, b), 0);
      assert.equal(entry.result.people[0].vertices.length, highest + 1);
    });

    test('modelInfo reads what the worker wrote', async () => {
      const info = await client.modelInfo();
      assert.equal(typeof info.meta, 'object');
      assert.equal(info.keypoint_names.length, 44);
      assert.ok(Array.isArray(info.faces) && info.faces.length > 0 && info.faces[0].length === 3);
      assert.ok(Array.isArray(info.parents));
      assert.equal(info.topology, 'synthetic');
    });
  });
}

async function collect(iter) {
  const out = [];
  for await (const x of iter) out.push(x);
  return out;
}
