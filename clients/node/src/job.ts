import { InvalidJobError } from './errors.js';
import { Keys, MAX_ID_BYTES } from './keys.js';
import type { Job, VideoObject } from './types.js';

/** The contract version this client speaks (the `v` of jobs and results). */
export const VERSION = 1;

/** A person box `[x1, y1, x2, y2]` in pixels. */
export type Box = [number, number, number, number];

/** The `video` object of a tracked video's frames, as this client takes it. */
export interface VideoSpec {
  /** How many frames the video has (at least 1). */
  frames: number;
  /** Frames per second (finite, above 0). */
  fps: number;
  /** The stream for the video's tracked output; default `<results>:video:<video_id>`. */
  replyTo?: string;
}

/** What a frame job says besides its image. */
export interface FrameOptions {
  /** Unique id (1 to 256 UTF-8 bytes); results are keyed by it. */
  jobId: string;
  /** The video the frame belongs to (echoed back; routes the job to its shard). */
  videoId?: string;
  /** The frame's number in its video, from 0 (echoed back). */
  frameNumber?: number;
  /** Person boxes in pixels; they win over the worker's detector. Empty or absent: found by it. */
  boxes?: Box[];
  /** The stream for the result: the shard's results stream or one under it. */
  replyTo?: string;
  /** Ask for the 6890 mesh vertices of each person. */
  vertices?: boolean;
  /** Makes this a frame of a tracked video (then `videoId` and `frameNumber` are required). */
  video?: VideoSpec;
  /**
   * Send the image as a raw `image` field (the default: a third smaller than base64, no base64
   * work on either side), or, when false, as `image_base64` inside the JSON.
   */
  raw?: boolean;
}

function utf8Length(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

function checkId(name: string, value: unknown, required: boolean): void {
  if (value === undefined || value === null) {
    if (required) throw new InvalidJobError(`\`${name}\` is required`);
    return;
  }
  if (typeof value !== 'string') throw new InvalidJobError(`\`${name}\` must be a string, got ${typeof value}`);
  const n = utf8Length(value);
  if (n === 0 || n > MAX_ID_BYTES) {
    throw new InvalidJobError(`\`${name}\` must be 1 to ${MAX_ID_BYTES} bytes, got ${n}`);
  }
}

function isCount(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

/**
 * The `job` object of a frame, in the contract's key order (`v`, `job_id`, `video_id`,
 * `frame_number`, `image_base64`, `boxes`, `reply_to`, `include`, `video`), optional keys only
 * when set. Checked as the worker checks it, and against `keys` (the shard the job goes to:
 * its `reply_to` and the video's must name that shard's results stream); an
 * {@link InvalidJobError} says what is wrong.
 */
export function buildJob(opts: FrameOptions, keys?: Keys, imageBase64?: string): Job {
  checkId('job_id', opts.jobId, true);
  checkId('video_id', opts.videoId, false);
  checkId('reply_to', opts.replyTo, false);
  if (opts.frameNumber !== undefined && !isCount(opts.frameNumber)) {
    throw new InvalidJobError(`\`frame_number\` must be an integer >= 0, got ${opts.frameNumber}`);
  }
  const boxes = opts.boxes ?? [];
  if (!Array.isArray(boxes)) throw new InvalidJobError('`boxes` must be an array of [x1, y1, x2, y2]', 'invalid_box');
  boxes.forEach((b, i) => {
    if (!Array.isArray(b) || b.length !== 4 || !b.every((x) => typeof x === 'number' && Number.isFinite(x))) {
      throw new InvalidJobError(`box ${i} is not an array of 4 finite numbers`, 'invalid_box');
    }
    if (!(b[2] > b[0] && b[3] > b[1])) {
      throw new InvalidJobError(`box ${i} [${b.join(', ')}] has no area (x2 > x1 and y2 > y1 needed)`, 'invalid_box');
    }
  });
  let video: VideoObject | undefined;
  if (opts.video !== undefined) {
    const { frames, fps, replyTo } = opts.video;
    if (!isCount(frames) || frames < 1) {
      throw new InvalidJobError(`\`video.frames\` must be an integer >= 1, got ${frames}`);
    }
    if (typeof fps !== 'number' || !Number.isFinite(fps) || !(fps > 0)) {
      throw new InvalidJobError(`\`video.fps\` must be a finite number > 0, got ${fps}`);
    }
    checkId('video.reply_to', replyTo, false);
    if (opts.videoId === undefined) throw new InvalidJobError('`video_id` is required when `video` is present');
    if (opts.frameNumber === undefined) {
      throw new InvalidJobError('`frame_number` is required when `video` is present');
    }
    if (opts.frameNumber >= frames) {
      throw new InvalidJobError(`\`frame_number\` must be below \`video.frames\` (${frames}), got ${opts.frameNumber}`);
    }
    video = replyTo === undefined ? { frames, fps } : { frames, fps, reply_to: replyTo };
  }
  if (keys !== undefined) {
    if (opts.replyTo !== undefined && !keys.acceptsReplyTo(opts.replyTo)) {
      throw new InvalidJobError(`reply_to ${JSON.stringify(opts.replyTo)} is not ${keys.results} or under it`);
    }
    if (video?.reply_to !== undefined && !keys.acceptsReplyTo(video.reply_to)) {
      throw new InvalidJobError(`video.reply_to ${JSON.stringify(video.reply_to)} is not ${keys.results} or under it`);
    }
  }
  const job: Job = { v: VERSION, job_id: opts.jobId };
  if (opts.videoId !== undefined) job.video_id = opts.videoId;
  if (opts.frameNumber !== undefined) job.frame_number = opts.frameNumber;
  if (imageBase64 !== undefined) job.image_base64 = imageBase64;
  if (boxes.length > 0) job.boxes = boxes.map((b) => [b[0], b[1], b[2], b[3]]);
  if (opts.replyTo !== undefined) job.reply_to = opts.replyTo;
  if (opts.vertices) job.include = ['vertices'];
  if (video !== undefined) job.video = video;
  return job;
}

/** Refuses an image that is not a non-empty Buffer (or Uint8Array). */
export function checkImage(image: unknown): asserts image is Uint8Array {
  if (!(image instanceof Uint8Array)) {
    throw new InvalidJobError('the image must be a Buffer (JPEG or PNG bytes)', 'missing_image');
  }
  if (image.length === 0) throw new InvalidJobError('the image is empty', 'missing_image');
}

/**
 * The stream fields of a frame job (for `XADD <jobs> * ...fields`): `job` (the JSON) and, when
 * `raw` (the default), `image` with the bytes; otherwise the image travels inside the JSON as
 * standard base64.
 */
export function jobFields(image: Uint8Array, opts: FrameOptions, keys?: Keys): (string | Buffer)[] {
  checkImage(image);
  const bytes = Buffer.isBuffer(image) ? image : Buffer.from(image.buffer, image.byteOffset, image.byteLength);
  if (opts.raw ?? true) {
    return ['job', JSON.stringify(buildJob(opts, keys)), 'image', bytes];
  }
  return ['job', JSON.stringify(buildJob(opts, keys, bytes.toString('base64')))];
}
