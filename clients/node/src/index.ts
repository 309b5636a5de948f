/**
 * `@hmr2/client`: the producer side of hmr2-worker for Node. Add frames and whole tracked videos
 * to the Redis queue (one node or a Redis Cluster, sharded as the workers are), wait for a video's
 * tracked output with progress, read per-frame results without duplicates, read the model hash.
 *
 * ```js
 * import { Client } from '@hmr2/client';
 * const client = await Client.connect({ url: 'redis://127.0.0.1:6379' });
 * const video = await client.submitVideo('clip-7', 'frames/', 30);
 * const { frames, done } = await client.waitVideo(video, { onProgress: (p) => console.log(p.answered) });
 * await client.close();
 * ```
 */
export { Client } from './client.js';
export type {
  ClientOptions,
  Connection,
  FrameInput,
  ResultsOptions,
  SubmitOptions,
  SubmittedVideo,
  VideoOutput,
  VideoProgress,
  WaitOptions,
} from './client.js';
export { InvalidJobError, VideoTimeoutError } from './errors.js';
export type { Unreadable } from './errors.js';
export type { FrameItem, FrameSource } from './frames.js';
export { buildJob, checkJob, checkJobText, jobFields, VERSION } from './job.js';
export type { Box, CheckOptions, FrameOptions, JobProblem, VideoSpec } from './job.js';
export { crc32, Keys, Layout, MAX_ID_BYTES, routingKey, shardOf } from './keys.js';
export { parseResult, parseVideoDone, parseVideoFrame, resultEntry, videoEntry } from './wire.js';
export type { RawFields, ResultEntry, VideoEntry } from './wire.js';
export type * from './types.js';
