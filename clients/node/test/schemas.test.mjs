// The JSON Schemas of the wire contract (schemas/*.schema.json, generated from the Rust crate)
// against this client: the shared vectors get the schema verdict the Rust and Python clients
// give them, and the jobs this client builds are valid jobs.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import Ajv2020 from 'ajv/dist/2020.js';

import { buildJob, Keys } from '../dist/index.js';
import { REPO_ROOT } from './support.mjs';

const schema = (name) => JSON.parse(readFileSync(join(REPO_ROOT, 'schemas', `${name}.schema.json`), 'utf8'));
const vectors = JSON.parse(readFileSync(join(REPO_ROOT, 'client', 'tests', 'wire_vectors.json'), 'utf8'));
const ajv = new Ajv2020({ allErrors: true, strict: false });
const validators = Object.fromEntries(
  ['job', 'result', 'video-frame', 'video-done', 'model'].map((n) => [n, ajv.compile(schema(n))]),
);

function explain(validate) {
  return ajv.errorsText(validate.errors);
}

test('job vectors: the schema accepts and refuses what the Rust and Python clients say it does', () => {
  let checked = 0;
  for (const v of vectors.jobs) {
    if (v.job === undefined || v.schema_valid === undefined) continue;
    const ok = validators.job(v.job);
    assert.equal(ok, v.schema_valid, `${v.name}: ${ok ? 'accepted' : explain(validators.job)}`);
    checked++;
  }
  assert.ok(checked >= 40, `${checked} job vectors checked`);
});

test('result, video frame and done vectors are valid against their schemas', () => {
  for (const [section, field, name] of [
    ['results', 'result', 'result'],
    ['video_frames', 'frame', 'video-frame'],
    ['video_done', 'done', 'video-done'],
  ]) {
    for (const v of vectors[section]) {
      assert.ok(validators[name](v[field]), `${section} ${v.name}: ${explain(validators[name])}`);
    }
  }
  for (const v of vectors.model) {
    assert.ok(validators.model(v.model), `model ${v.name}: ${explain(validators.model)}`);
  }
});

test('jobs this client builds are valid jobs, and a broken one is not', () => {
  const keys = new Keys('hmr2');
  const built = [
    buildJob({ jobId: 'j-1' }, keys),
    buildJob({ jobId: 'clip-7:3', videoId: 'clip-7', frameNumber: 3, video: { frames: 10, fps: 29.97 } }, keys),
    buildJob({ jobId: 'j-2', boxes: [[10, 20, 110, 320]], vertices: true, replyTo: 'hmr2:results:mine' }, keys),
    buildJob({ jobId: 'j-3' }, keys, Buffer.from('not really a jpeg').toString('base64')),
  ];
  for (const job of built) {
    assert.ok(validators.job(job), `${JSON.stringify(job)}: ${explain(validators.job)}`);
  }
  assert.equal(validators.job({ ...built[1], frame_number: -1 }), false);
});
