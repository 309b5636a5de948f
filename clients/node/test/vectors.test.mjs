// The shared wire vectors (client/tests/wire_vectors.json, written from the Rust crate and also
// checked by the Rust and Python clients): the job rules with the worker's error codes, results
// and a video's output entries as this client reads them, the key layout and the reply_to rule.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { checkJob, checkJobText, Layout, parseResult, parseVideoDone, parseVideoFrame, resultEntry } from '../dist/index.js';
import { REPO_ROOT } from './support.mjs';

const vectors = JSON.parse(readFileSync(join(REPO_ROOT, 'client', 'tests', 'wire_vectors.json'), 'utf8'));

// JSON.parse reads `3.0` as 3 and keeps the last of a repeated key, so these two kinds of raw
// text cannot be told apart here; the worker refuses them (the Rust vectors check that).
const UNSEEABLE = new Set(['raw_repeated_key', 'raw_repeated_video_key', 'raw_frame_number_written_as_float', 'raw_video_frames_written_as_float']);

test('jobs: valid ones pass the checks, invalid ones get the code the worker answers', () => {
  assert.ok(vectors.jobs.length >= 50);
  let checked = 0;
  for (const v of vectors.jobs) {
    if (UNSEEABLE.has(v.name)) continue;
    const problem = v.raw !== undefined ? checkJobText(v.raw, { image: v.image }) : checkJob(v.job, { image: v.image });
    if (v.valid) {
      assert.equal(problem, null, `${v.name}: ${problem?.message}`);
    } else {
      assert.ok(problem, `${v.name} is refused`);
      assert.equal(problem.code, v.code, `${v.name}: ${problem.message}`);
      if (v.error) assert.ok(problem.message.includes(v.error), `${v.name}: "${problem.message}" names ${v.error}`);
    }
    checked++;
  }
  assert.equal(checked, vectors.jobs.length - UNSEEABLE.size, 'every vector but the unseeable ones was checked');
});

test('results, tracked frames and done entries read as written', () => {
  for (const [section, field, parse] of [
    ['results', 'result', parseResult],
    ['video_frames', 'frame', parseVideoFrame],
    ['video_done', 'done', parseVideoDone],
  ]) {
    assert.ok(vectors[section].length >= 3, section);
    for (const v of vectors[section]) {
      const text = JSON.stringify(v[field]);
      assert.deepEqual(parse(text), JSON.parse(text), `${section} ${v.name}`);
    }
  }
  // Every result vector, as a stream entry, is a result (not an unreadable entry).
  for (const v of vectors.results) {
    const e = resultEntry('s', '1-0', ['job_id', v.result.job_id ?? '', 'result', JSON.stringify(v.result)]);
    assert.equal(e.unreadable, undefined, v.name);
    assert.equal(e.result.status, v.result.status);
  }
});

test('the key layout: every key of the shard a job goes to', () => {
  assert.ok(vectors.keys.length >= 5);
  for (const v of vectors.keys) {
    const layout = new Layout(v.prefix, v.shards, v.cluster);
    const k = layout.keysFor(v.video_id, v.job_id);
    const what = `${v.prefix} ${v.shards} ${v.cluster} ${v.video_id ?? v.job_id}`;
    assert.deepEqual(
      [k.shard, k.tag, k.jobs, k.results, k.dead, k.group, k.model, k.videos, k.trackers, k.videosOpen],
      [v.shard, v.tag, v.jobs, v.results, v.dead, v.group, v.model, v.videos, v.trackers, v.videos_open],
      what,
    );
    if (v.video_id !== null) {
      assert.equal(k.videoState(v.video_id), v.video_state, what);
      assert.equal(k.videoFrames(v.video_id), v.video_frames, what);
      assert.equal(k.videoOutput(v.video_id), v.video_output, what);
    }
  }
});

test('reply_to: accepted exactly when it is the shard results stream or under it', () => {
  assert.ok(vectors.reply_to.length >= 10);
  for (const v of vectors.reply_to) {
    const k = new Layout(v.prefix, v.shards, v.cluster).shard(v.shard);
    assert.equal(k.acceptsReplyTo(v.reply_to), v.accepted, `${v.reply_to} on shard ${v.shard} of ${v.prefix}`);
    assert.equal(k.videoOutput('v', v.reply_to) !== null, v.accepted);
    const job = { job_id: 'a', image_base64: 'AQID', reply_to: v.reply_to };
    const problem = checkJob(job, { keys: k });
    assert.equal(problem === null, v.accepted, v.reply_to);
    if (!v.accepted) assert.equal(problem.code, 'invalid_job');
  }
});
