/**
 * Reading what workers write: results (DESIGN §3) and a tracked video's output entries
 * (DESIGN §13). Each reader checks the shape it needs and says what is wrong, so a caller can
 * surface a bad entry as a value instead of failing a whole page.
 */
import type { Unreadable } from './errors.js';
import type { JobResult, VideoDone, VideoFrame } from './types.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

type Json = Record<string, unknown>;

function kind(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

function object(text: string): Json {
  const v: unknown = JSON.parse(text);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`expected an object, got ${kind(v)}`);
  return v as Json;
}

function need(o: Json, key: string, ok: (v: unknown) => boolean, what: string, optional = false): void {
  if (!(key in o) || o[key] === undefined) {
    if (optional) return;
    throw new Error(`\`${key}\` is missing`);
  }
  if (optional && o[key] === null) return;
  if (!ok(o[key])) throw new Error(`\`${key}\` must be ${what}, got ${kind(o[key])}`);
}

const isStr = (v: unknown) => typeof v === 'string';
const isNum = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
const isCount = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isArr = (v: unknown) => Array.isArray(v);
const isObj = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);

function errorBody(o: Json, required: boolean): void {
  need(o, 'error', isObj, 'an object', !required);
  const e = o['error'] as Json | undefined | null;
  if (e) {
    need(e, 'code', isStr, 'a string');
    need(e, 'message', isStr, 'a string');
  }
}

function version(o: Json): void {
  need(o, 'v', isCount, 'an integer');
  if (o['v'] !== 1) throw new Error(`\`v\` is ${String(o['v'])}, this client reads version 1`);
}

/** Reads the JSON text of a `result` field; throws with a reason when it is not a v1 result. */
export function parseResult(text: string): JobResult {
  const o = object(text);
  version(o);
  need(o, 'job_id', (v) => v === null || isStr(v), 'a string or null');
  need(o, 'entry_id', isStr, 'a string');
  need(o, 'video_id', isStr, 'a string', true);
  need(o, 'frame_number', isCount, 'an integer >= 0', true);
  need(o, 'status', (v) => v === 'ok' || v === 'error', '"ok" or "error"');
  errorBody(o, o['status'] === 'error');
  need(o, 'people', isArr, 'an array', true);
  need(o, 'warnings', isArr, 'an array', true);
  need(o, 'timings_ms', isObj, 'an object', true);
  for (const k of ['worker', 'device', 'model']) need(o, k, isStr, 'a string', true);
  // What an older or partial writer leaves out reads as empty, as the Rust client reads it.
  o['people'] ??= [];
  o['timings_ms'] ??= { queue_wait: 0, decode: 0, inference: 0, total: 0 };
  for (const k of ['worker', 'device', 'model']) o[k] ??= '';
  return o as unknown as JobResult;
}

/** Reads the JSON text of a video output's `frame` field. */
export function parseVideoFrame(text: string): VideoFrame {
  const o = object(text);
  version(o);
  need(o, 'video_id', isStr, 'a string');
  need(o, 'frame_number', isCount, 'an integer >= 0');
  need(o, 'status', (v) => v === 'ok' || v === 'error', '"ok" or "error"');
  errorBody(o, o['status'] === 'error');
  need(o, 'people', isArr, 'an array', true);
  o['people'] ??= [];
  return o as unknown as VideoFrame;
}

/** Reads the JSON text of a video output's `done` field. */
export function parseVideoDone(text: string): VideoDone {
  const o = object(text);
  version(o);
  need(o, 'video_id', isStr, 'a string');
  need(o, 'status', (v) => v === 'ok' || v === 'expired', '"ok" or "expired"');
  for (const k of ['frames', 'ok_frames', 'error_frames', 'missing_frames']) need(o, k, isCount, 'an integer >= 0');
  need(o, 'fps', isNum, 'a number');
  need(o, 'tracks', isArr, 'an array', true);
  o['tracks'] ??= [];
  need(o, 'timings_ms', isObj, 'an object');
  return o as unknown as VideoDone;
}

/** The fields of a stream entry, name and value in turn, as ioredis returns them (Buffers or strings). */
export type RawFields = (Buffer | string)[];

/** The value of `field` in `fields`, as strict UTF-8 text; `undefined` when absent. */
export function textField(fields: RawFields, field: string): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i]!.toString() === field) {
      const value = fields[i + 1]!;
      return typeof value === 'string' ? value : utf8.decode(value);
    }
  }
  return undefined;
}

/** One entry of a reply stream: its result, or why it cannot be read. */
export type ResultEntry =
  | { entryId: string; jobId: string; result: JobResult; unreadable?: undefined }
  | { entryId: string; jobId: string; result?: undefined; unreadable: Unreadable };

/** One entry of a video's output stream: a tracked frame, the `done` summary, or why neither. */
export type VideoEntry =
  | { entryId: string; frame: VideoFrame; done?: undefined; unreadable?: undefined }
  | { entryId: string; frame?: undefined; done: VideoDone; unreadable?: undefined }
  | { entryId: string; frame?: undefined; done?: undefined; unreadable: Unreadable };

function why(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * The entry `entryId` of the reply stream `stream` with `fields` (from XRANGE or XREAD), read: its
 * result, or why it cannot be read.
 */
export function resultEntry(stream: string, entryId: string, fields: RawFields): ResultEntry {
  const unreadable = (reason: string): ResultEntry => ({ entryId, jobId, unreadable: { stream, entryId, reason } });
  let jobId = '';
  try {
    jobId = textField(fields, 'job_id') ?? '';
  } catch (e) {
    return unreadable(`\`job_id\`: ${why(e)}`);
  }
  let text: string | undefined;
  try {
    text = textField(fields, 'result');
  } catch (e) {
    return unreadable(`\`result\`: ${why(e)}`);
  }
  if (text === undefined) return unreadable('no `result` field');
  try {
    return { entryId, jobId, result: parseResult(text) };
  } catch (e) {
    return unreadable(`\`result\` is not a result: ${why(e)}`);
  }
}

/**
 * The entry `entryId` of the video output stream `stream` with `fields`, read: a tracked frame,
 * the `done` summary, or why neither.
 */
export function videoEntry(stream: string, entryId: string, fields: RawFields): VideoEntry {
  const unreadable = (reason: string): VideoEntry => ({ entryId, unreadable: { stream, entryId, reason } });
  for (const [field, parse, what] of [
    ['frame', parseVideoFrame, 'a video frame'],
    ['done', parseVideoDone, "a video's end"],
  ] as const) {
    let text: string | undefined;
    try {
      text = textField(fields, field);
    } catch (e) {
      return unreadable(`\`${field}\`: ${why(e)}`);
    }
    if (text === undefined) continue;
    try {
      const value = parse(text);
      return field === 'frame'
        ? { entryId, frame: value as VideoFrame }
        : { entryId, done: value as VideoDone };
    } catch (e) {
      return unreadable(`\`${field}\` is not ${what}: ${why(e)}`);
    }
  }
  return unreadable('neither a `frame` nor a `done` field');
}
