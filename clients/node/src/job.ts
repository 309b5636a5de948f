import { InvalidJobError } from './errors.js';
import { Keys, MAX_ID_BYTES } from './keys.js';
import type { Job } from './types.js';

/** The contract version this client speaks (the `v` of jobs and results). */
export const VERSION = 1 as const;

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

/** Why the worker would refuse a job: its error code and a message. */
export interface JobProblem {
  /** `invalid_job`, `unsupported_version`, `missing_image`, `invalid_box` or `invalid_json`. */
  code: string;
  message: string;
}

/** What {@link checkJob} checks a job against. */
export interface CheckOptions {
  /** Whether the entry carries a raw `image` field (then `image_base64` is not needed). */
  image?: boolean;
  /** Most person boxes per job: the workers' `limits.max_boxes` (default 32). */
  maxBoxes?: number;
  /** The shard the job goes to: its `reply_to` (and its video's) must name that shard's results stream. */
  keys?: Keys;
}

function kind(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'an integer' : 'a number';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

const absent = (v: unknown) => v === undefined || v === null;
const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;

class Refusal extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function refuse(message: string, code = 'invalid_job'): never {
  throw new Refusal(code, message);
}

/** `video_id`, `reply_to` and the like: absent, null, or a string of 1 to 256 UTF-8 bytes. */
function optionalId(name: string, v: unknown): string | undefined {
  if (absent(v)) return undefined;
  if (typeof v !== 'string') refuse(`\`${name}\` must be a string, got ${kind(v)}`);
  const n = Buffer.byteLength(v, 'utf8');
  if (n === 0 || n > MAX_ID_BYTES) refuse(`\`${name}\` must be 1 to ${MAX_ID_BYTES} bytes, got ${n}`);
  return v;
}

function check(job: unknown, opts: CheckOptions): void {
  if (typeof job !== 'object' || job === null || Array.isArray(job)) {
    refuse(`a job is a JSON object, got ${kind(job)}`, 'invalid_json');
  }
  const j = job as Record<string, unknown>;
  if ('v' in j && j['v'] !== undefined) {
    if (typeof j['v'] !== 'number' || !Number.isInteger(j['v'])) refuse(`\`v\` must be an integer, got ${kind(j['v'])}`);
    if (j['v'] !== VERSION) refuse(`\`v\` is ${j['v']}; this contract is version ${VERSION}`, 'unsupported_version');
  }
  if (absent(j['job_id'])) refuse('`job_id` is required');
  if (typeof j['job_id'] !== 'string') refuse(`\`job_id\` must be a string, got ${kind(j['job_id'])}`);
  const idBytes = Buffer.byteLength(j['job_id'], 'utf8');
  if (idBytes === 0) refuse('`job_id` is empty');
  if (idBytes > MAX_ID_BYTES) refuse(`\`job_id\` is ${idBytes} bytes, at most ${MAX_ID_BYTES} allowed`);
  const videoId = optionalId('video_id', j['video_id']);
  const replyTo = optionalId('reply_to', j['reply_to']);
  const frameNumber = j['frame_number'];
  if (!absent(frameNumber) && !isCount(frameNumber)) {
    refuse(`\`frame_number\` must be an integer >= 0, got ${kind(frameNumber)}`);
  }
  const b64 = j['image_base64'];
  if (!absent(b64) && typeof b64 !== 'string') refuse(`\`image_base64\` must be a string, got ${kind(b64)}`);
  if (absent(b64) && !opts.image) refuse('no image: neither an `image` field nor `image_base64`', 'missing_image');
  const boxes = j['boxes'];
  if (!absent(boxes)) {
    if (!Array.isArray(boxes)) refuse(`\`boxes\` must be an array of [x1, y1, x2, y2], got ${kind(boxes)}`, 'invalid_box');
    const most = opts.maxBoxes ?? 32;
    if (boxes.length > most) refuse(`${boxes.length} boxes, at most ${most} allowed`, 'invalid_box');
    boxes.forEach((b, i) => {
      if (!Array.isArray(b) || b.length !== 4) refuse(`box ${i} is not an array of 4 numbers`, 'invalid_box');
      if (!b.every((x) => typeof x === 'number')) refuse(`box ${i} has a non-numeric coordinate`, 'invalid_box');
    });
  }
  const include = j['include'];
  if (!absent(include)) {
    if (!Array.isArray(include)) refuse(`\`include\` must be an array of strings, got ${kind(include)}`);
    for (const item of include) {
      if (typeof item !== 'string') refuse(`\`include\` must hold strings, got ${kind(item)}`);
      if (item !== 'vertices') refuse(`\`include\` holds ${JSON.stringify(item)}; known outputs: "vertices"`);
    }
  }
  const video = j['video'];
  if (!absent(video)) {
    if (typeof video !== 'object' || Array.isArray(video)) refuse(`\`video\` must be an object, got ${kind(video)}`);
    const v = video as Record<string, unknown>;
    if (absent(v['frames'])) refuse('`video.frames` is required');
    if (!isCount(v['frames']) || v['frames'] < 1) refuse(`\`video.frames\` must be an integer >= 1, got ${kind(v['frames'])}`);
    if (v['fps'] === undefined) refuse('`video.fps` is required');
    if (typeof v['fps'] !== 'number' || !Number.isFinite(v['fps']) || !(v['fps'] > 0)) {
      refuse(`\`video.fps\` must be a number > 0, got ${typeof v['fps'] === 'number' ? v['fps'] : kind(v['fps'])}`);
    }
    const videoReplyTo = optionalId('video.reply_to', v['reply_to']);
    if (videoId === undefined) refuse('`video_id` is required when `video` is present');
    if (absent(frameNumber)) refuse('`frame_number` is required when `video` is present');
    if ((frameNumber as number) >= v['frames']) {
      refuse(`\`frame_number\` must be below \`video.frames\` (${v['frames']}), got ${frameNumber}`);
    }
    if (opts.keys && videoReplyTo !== undefined && !opts.keys.acceptsReplyTo(videoReplyTo)) {
      refuse(`\`video.reply_to\` ${JSON.stringify(videoReplyTo)} is not ${opts.keys.results} or under it`);
    }
  }
  if (opts.keys && replyTo !== undefined && !opts.keys.acceptsReplyTo(replyTo)) {
    refuse(`\`reply_to\` ${JSON.stringify(replyTo)} is not ${opts.keys.results} or under it`);
  }
}

/**
 * Why the worker would refuse `job` (a job object, as parsed from its JSON), or `null` when it
 * would take it: the rules of the wire contract (DESIGN §3, §13) with the error code the worker
 * answers. The same rules the shared vectors (`client/tests/wire_vectors.json`) hold the worker
 * to. With `keys`, also the `reply_to` rule of that shard.
 */
export function checkJob(job: unknown, opts: CheckOptions = {}): JobProblem | null {
  try {
    check(job, opts);
    return null;
  } catch (e) {
    if (e instanceof Refusal) return { code: e.code, message: e.message };
    throw e;
  }
}

/**
 * {@link checkJob} for the text of a `job` field. JSON.parse cannot see a repeated key or an
 * integer written as `3.0` (the worker refuses both); everything else is checked.
 */
export function checkJobText(text: string, opts: CheckOptions = {}): JobProblem | null {
  let job: unknown;
  try {
    job = JSON.parse(text);
  } catch (e) {
    return { code: 'invalid_json', message: `the job is not JSON: ${(e as Error).message}` };
  }
  return checkJob(job, opts);
}

/**
 * The `job` object of a frame, in the contract's key order (`v`, `job_id`, `video_id`,
 * `frame_number`, `image_base64`, `boxes`, `reply_to`, `include`, `video`), optional keys only
 * when set. Checked by {@link checkJob} (against `keys`, the shard the job goes to, when given)
 * and for boxes without area; an {@link InvalidJobError} says what is wrong and with which code
 * the worker would answer.
 */
export function buildJob(opts: FrameOptions, keys?: Keys, imageBase64?: string): Job {
  const job: Job = { v: VERSION, job_id: opts.jobId };
  if (opts.videoId !== undefined) job.video_id = opts.videoId;
  if (opts.frameNumber !== undefined) job.frame_number = opts.frameNumber;
  if (imageBase64 !== undefined) job.image_base64 = imageBase64;
  const boxes = opts.boxes ?? [];
  if (!Array.isArray(boxes) || boxes.length > 0) job.boxes = boxes;
  if (opts.replyTo !== undefined) job.reply_to = opts.replyTo;
  if (opts.vertices) job.include = ['vertices'];
  if (opts.video !== undefined) {
    const { frames, fps, replyTo } = opts.video;
    job.video = replyTo === undefined ? { frames, fps } : { frames, fps, reply_to: replyTo };
  }
  const problem = checkJob(job, { image: true, maxBoxes: Infinity, ...(keys ? { keys } : {}) });
  if (problem) throw new InvalidJobError(problem.message, problem.code);
  (job.boxes ?? []).forEach((b, i) => {
    if (!b.every((x) => Number.isFinite(x))) throw new InvalidJobError(`box ${i} has a coordinate that is not finite`, 'invalid_box');
    if (!(b[2] > b[0] && b[3] > b[1])) {
      throw new InvalidJobError(`box ${i} [${b.join(', ')}] has no area (x2 > x1 and y2 > y1 needed)`, 'invalid_box');
    }
  });
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
