// The key layout, shard rule and job building, checked against the Rust crate's rules and the
// shared vectors (client/tests/shard_vectors.json).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { buildJob, crc32, InvalidJobError, jobFields, Keys, Layout, routingKey, shardOf } from '../dist/index.js';
import { REPO_ROOT } from './support.mjs';

test('the shard hash matches the shared vectors (crc32 of the UTF-8 bytes, modulo shards)', () => {
  const vectors = JSON.parse(readFileSync(join(REPO_ROOT, 'client', 'tests', 'shard_vectors.json'), 'utf8'));
  assert.ok(vectors.length >= 5);
  for (const v of vectors) {
    assert.equal(crc32(v.key), v.crc32, v.key);
    for (const [n, shard] of Object.entries(v.shards)) {
      assert.equal(shardOf(v.key, Number(n)), shard, `${v.key} % ${n}`);
    }
  }
  assert.equal(crc32('123456789'), 0xcbf43926);
  assert.equal(shardOf('video-7', 1), 0);
});

test('a job routes by its video id, else its job id', () => {
  assert.equal(routingKey('v', 'j'), 'v');
  assert.equal(routingKey(undefined, 'j'), 'j');
  const l = new Layout('p', 4, true);
  assert.equal(l.keysFor('video-7', 'a').shard, l.keysFor('video-7', 'b').shard);
  assert.equal(l.keysFor(undefined, 'video-7').shard, shardOf('video-7', 4));
});

test('one shard without a cluster keeps the unsharded keys; shards and clusters use hash tags', () => {
  const one = new Layout('hmr2', 1, false);
  assert.equal(one.length, 1);
  assert.equal(one.keysFor('any video', 'j').jobs, 'hmr2:jobs');
  const k = one.shard(0);
  assert.deepEqual(
    [k.tag, k.jobs, k.results, k.dead, k.group, k.model, k.videos, k.trackers, k.videosOpen],
    ['hmr2', 'hmr2:jobs', 'hmr2:results', 'hmr2:dead', 'hmr2-workers', 'hmr2:model', 'hmr2:videos', 'hmr2-trackers', 'hmr2:videos:open'],
  );
  assert.equal(k.videoOutput('clip-7'), 'hmr2:results:video:clip-7');
  assert.equal(k.videoState('clip-7'), 'hmr2:video:clip-7');
  assert.equal(k.videoFrames('clip-7'), 'hmr2:video-frames:clip-7');

  const l = new Layout('hmr2', 4, true);
  const s2 = l.shard(2);
  assert.deepEqual(
    [s2.shard, s2.tag, s2.jobs, s2.results, s2.dead, s2.group, s2.model],
    [2, '{hmr2:2}', '{hmr2:2}:jobs', '{hmr2:2}:results', '{hmr2:2}:dead', '{hmr2:2}-workers', 'hmr2:model'],
  );
  assert.equal(l.shard(3).videoOutput('clip-7'), '{hmr2:3}:results:video:clip-7');
  // A cluster with one shard still keeps its keys in one slot.
  assert.equal(new Layout('hmr2', 1, true).shard(0).jobs, '{hmr2:0}:jobs');
  assert.equal(l.videoKeys('clip-7').shard, shardOf('clip-7', 4));
  assert.equal(l.shardOfReplyTo('{hmr2:3}:results:x').shard, 3);
  assert.equal(l.shardOfReplyTo('{hmr2:12}:results'), undefined);
  assert.throws(() => new Layout('hmr2', 0), RangeError);
});

test('reply_to must be the shard results stream or under it', () => {
  const k = Keys.unsharded('hmr2');
  for (const ok of ['hmr2:results', 'hmr2:results:', 'hmr2:results:video-7']) assert.ok(k.acceptsReplyTo(ok), ok);
  for (const bad of ['hmr2:results-b:jobs', 'hmr2:resultsX', 'hmr2:results_', 'hmr2:results{x}', 'hmr2:jobs', 'other:results', '']) {
    assert.ok(!k.acceptsReplyTo(bad), bad);
    assert.equal(k.replyStream(bad), 'hmr2:results');
  }
  assert.equal(k.videoOutput('v', 'hmr2:jobs'), null);
  assert.equal(k.videoOutput('v', 'hmr2:results:mine'), 'hmr2:results:mine');
  const s2 = new Layout('hmr2', 4, false).shard(2);
  assert.ok(s2.acceptsReplyTo('{hmr2:2}:results:v'));
  assert.ok(!s2.acceptsReplyTo('{hmr2:2}:results2:v'));
  assert.ok(!s2.acceptsReplyTo('{hmr2:1}:results:v'));
});

test('a built job has the contract key order and leaves out what is not set', () => {
  assert.equal(JSON.stringify(buildJob({ jobId: 'a' })), '{"v":1,"job_id":"a"}');
  const job = buildJob({
    jobId: 'clip-7:16',
    videoId: 'clip-7',
    frameNumber: 16,
    boxes: [[1, 2.5, 30, 40]],
    replyTo: 'hmr2:results:me',
    vertices: true,
    video: { frames: 120, fps: 29.97 },
  });
  assert.equal(
    JSON.stringify(job),
    '{"v":1,"job_id":"clip-7:16","video_id":"clip-7","frame_number":16,"boxes":[[1,2.5,30,40]],' +
      '"reply_to":"hmr2:results:me","include":["vertices"],"video":{"frames":120,"fps":29.97}}',
  );
  const own = buildJob({ jobId: 'c:1', videoId: 'c', frameNumber: 1, video: { frames: 2, fps: 30, replyTo: 'hmr2:results:out' } });
  assert.deepEqual(own.video, { frames: 2, fps: 30, reply_to: 'hmr2:results:out' });
});

test('raw frames carry the bytes in an image field, base64 frames inside the JSON', () => {
  const image = Buffer.from([0xff, 0xd8, 0xff, 0, 1, 2, 3]);
  const raw = jobFields(image, { jobId: 'v:0', videoId: 'v', frameNumber: 0 });
  assert.equal(raw.length, 4);
  assert.equal(raw[0], 'job');
  assert.equal(raw[2], 'image');
  assert.deepEqual(raw[3], image);
  assert.equal(JSON.parse(raw[1]).image_base64, undefined);
  const b64 = jobFields(image, { jobId: 'v:0', raw: false });
  assert.equal(b64.length, 2);
  assert.equal(JSON.parse(b64[1]).image_base64, image.toString('base64'));
  assert.equal(Buffer.from(JSON.parse(b64[1]).image_base64, 'base64').compare(image), 0);
});

test('what the worker would refuse is refused before it is sent, with the code it would get', () => {
  const refused = (opts, code, text) => {
    assert.throws(
      () => jobFields(Buffer.from([1]), opts, Keys.unsharded('hmr2')),
      (e) => e instanceof InvalidJobError && e.code === code && e.message.includes(text),
    );
  };
  refused({ jobId: '' }, 'invalid_job', '`job_id`');
  refused({ jobId: 'x'.repeat(257) }, 'invalid_job', 'at most 256');
  refused({ jobId: 'é'.repeat(129) }, 'invalid_job', '258 bytes');
  refused({ jobId: 'a', videoId: '' }, 'invalid_job', '`video_id` must be 1 to 256 bytes');
  refused({ jobId: 'a', frameNumber: -1 }, 'invalid_job', 'frame_number');
  refused({ jobId: 'a', frameNumber: 1.5 }, 'invalid_job', 'frame_number');
  refused({ jobId: 'a', replyTo: 'hmr2:jobs' }, 'invalid_job', 'reply_to');
  refused({ jobId: 'a', replyTo: 'hmr2:results-b' }, 'invalid_job', 'reply_to');
  refused({ jobId: 'a', boxes: [[0, 0, 10]] }, 'invalid_box', 'box 0');
  refused({ jobId: 'a', boxes: [[0, 0, 10, Infinity]] }, 'invalid_box', 'box 0');
  refused({ jobId: 'a', boxes: [[10, 0, 5, 10]] }, 'invalid_box', 'no area');
  refused({ jobId: 'a', video: { frames: 3, fps: 30 } }, 'invalid_job', '`video_id` is required');
  refused({ jobId: 'a', videoId: 'v', video: { frames: 3, fps: 30 } }, 'invalid_job', '`frame_number` is required');
  refused({ jobId: 'a', videoId: 'v', frameNumber: 3, video: { frames: 3, fps: 30 } }, 'invalid_job', 'below `video.frames` (3)');
  refused({ jobId: 'a', videoId: 'v', frameNumber: 0, video: { frames: 0, fps: 30 } }, 'invalid_job', 'video.frames');
  refused({ jobId: 'a', videoId: 'v', frameNumber: 0, video: { frames: 1, fps: 0 } }, 'invalid_job', 'video.fps');
  refused({ jobId: 'a', videoId: 'v', frameNumber: 0, video: { frames: 1, fps: NaN } }, 'invalid_job', 'video.fps');
  refused(
    { jobId: 'a', videoId: 'v', frameNumber: 0, video: { frames: 1, fps: 1, replyTo: 'other:results' } },
    'invalid_job',
    'video.reply_to',
  );
  assert.throws(() => jobFields(Buffer.alloc(0), { jobId: 'a' }), (e) => e.code === 'missing_image');
  assert.throws(() => jobFields('not bytes', { jobId: 'a' }), (e) => e.code === 'missing_image');
});
