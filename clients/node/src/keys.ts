/**
 * Every Redis key of the queue, built in one place from the prefix (DESIGN §3), and the split of
 * the queue into shards for Redis Cluster (DESIGN §11). The same layout and shard rule as the Rust
 * crate `hmr2-client` (`client/src/keys.rs`) and the Python package.
 *
 * Shard `k` keeps its keys under the hash tag `{<prefix>:<k>}` (`{hmr2:0}:jobs`,
 * `{hmr2:0}:results`, ...), so each shard lives in one cluster slot. With one shard and no cluster
 * the keys are the unsharded `hmr2:jobs` etc. A job goes to shard
 * `crc32(video_id, else job_id) % shards` (CRC-32/ISO-HDLC of the UTF-8 bytes, as zlib's `crc32`).
 */

/** Longest accepted `job_id`, `video_id` and `reply_to`, in UTF-8 bytes. */
export const MAX_ID_BYTES = 256;

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32/ISO-HDLC (zlib's `crc32`) of `data`: of its UTF-8 bytes when it is a string. */
export function crc32(data: string | Uint8Array): number {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * The shard of a job whose routing key (its `video_id`, else its `job_id`) is `key`, on a queue
 * of `shards` shards: `crc32(key) % shards`, 0 when there is one shard. Stable across versions,
 * languages and machines (Python: `zlib.crc32(key.encode()) % shards`).
 */
export function shardOf(key: string, shards: number): number {
  if (!(shards > 1)) return 0;
  return crc32(key) % Math.floor(shards);
}

/** The routing key of a job: its `video_id` when it has one, else its `job_id`. */
export function routingKey(videoId: string | undefined | null, jobId: string): string {
  return videoId ?? jobId;
}

/** Every key and name of one shard of the queue (all of the queue when it is not sharded). */
export class Keys {
  /** Which shard these are the keys of (0 when the queue is not sharded). */
  readonly shard: number;
  /** What every key of the shard but `model` starts with: the prefix, or the shard's hash tag. */
  readonly tag: string;
  /** `{prefix}:jobs`: the job stream. */
  readonly jobs: string;
  /** `{prefix}:results`: the default reply stream. */
  readonly results: string;
  /** `{prefix}:dead`: the dead-letter stream. */
  readonly dead: string;
  /** `{prefix}-workers`: the consumer group on the job stream. */
  readonly group: string;
  /** `{prefix}:model`: the hash the workers fill at start-up (one per queue, not per shard). */
  readonly model: string;
  /** `{prefix}:videos`: the stream of tracking jobs, one per complete video. */
  readonly videos: string;
  /** `{prefix}-trackers`: the consumer group on the tracking-job stream. */
  readonly trackers: string;
  /** `{prefix}:videos:open`: the videos with frames recorded and no output written yet. */
  readonly videosOpen: string;

  /** Keys for `tag` (the prefix, or a shard's hash tag), shard number `shard`, model hash `model`. */
  private constructor(tag: string, shard: number, model: string) {
    this.shard = shard;
    this.tag = tag;
    this.jobs = `${tag}:jobs`;
    this.results = `${tag}:results`;
    this.dead = `${tag}:dead`;
    this.group = `${tag}-workers`;
    this.model = model;
    this.videos = `${tag}:videos`;
    this.trackers = `${tag}-trackers`;
    this.videosOpen = `${tag}:videos:open`;
  }

  /** Keys for `prefix`, not sharded (`hmr2:jobs`, ...). */
  static unsharded(prefix: string): Keys {
    return new Keys(prefix, 0, `${prefix}:model`);
  }

  /** Keys of shard `k` of `prefix`: all under the hash tag `{<prefix>:<k>}` but `model`. */
  static shard(prefix: string, k: number): Keys {
    return new Keys(`{${prefix}:${k}}`, k, `${prefix}:model`);
  }

  /**
   * Whether a job of this shard may name `replyTo`: the shard's results stream or a stream under
   * it (`<results>:...`). Anything else (another shard's, another prefix's, `hmr2:results-b`) is
   * answered `invalid_job` by the worker.
   */
  acceptsReplyTo(replyTo: string): boolean {
    if (!replyTo.startsWith(this.results)) return false;
    const rest = replyTo.slice(this.results.length);
    return rest === '' || rest.startsWith(':');
  }

  /** The stream a job's result goes to: its `replyTo` when accepted, else the results stream. */
  replyStream(replyTo?: string | null): string {
    return replyTo != null && this.acceptsReplyTo(replyTo) ? replyTo : this.results;
  }

  /**
   * The stream the video `videoId`'s tracked output goes to: `replyTo` when accepted, the default
   * `<results>:video:<videoId>` when there is none, `null` when `replyTo` is refused.
   */
  videoOutput(videoId: string, replyTo?: string | null): string | null {
    if (replyTo == null) return `${this.results}:video:${videoId}`;
    return this.acceptsReplyTo(replyTo) ? replyTo : null;
  }

  /** `<tag>:video:<videoId>`: the worker's recorded state of a video. */
  videoState(videoId: string): string {
    return `${this.tag}:video:${videoId}`;
  }

  /** `<tag>:video-frames:<videoId>`: the frames the worker recorded for a video. */
  videoFrames(videoId: string): string {
    return `${this.tag}:video-frames:${videoId}`;
  }
}

/** The queue's keys: one {@link Keys} per shard. */
export class Layout {
  /** Every shard's keys, in shard order. */
  readonly shards: readonly Keys[];
  /** The prefix the keys are built from. */
  readonly prefix: string;

  /**
   * The layout of a queue under `prefix` with `shards` shards (at least 1). Sharded keys
   * (`{<prefix>:<k>}:...`) when `shards > 1` or `cluster`; otherwise the unsharded keys.
   */
  constructor(prefix = 'hmr2', shards = 1, cluster = false) {
    if (!Number.isInteger(shards) || shards < 1) {
      throw new RangeError(`shards must be an integer >= 1, got ${shards}`);
    }
    this.prefix = prefix;
    this.shards =
      shards === 1 && !cluster
        ? [Keys.unsharded(prefix)]
        : Array.from({ length: shards }, (_, k) => Keys.shard(prefix, k));
  }

  /** How many shards. */
  get length(): number {
    return this.shards.length;
  }

  /** The keys of shard `k` (modulo the number of shards). */
  shard(k: number): Keys {
    return this.shards[((k % this.shards.length) + this.shards.length) % this.shards.length]!;
  }

  /** The keys of the shard a job with this `videoId` (else `jobId`) belongs to. */
  keysFor(videoId: string | undefined | null, jobId: string): Keys {
    return this.shard(shardOf(routingKey(videoId, jobId), this.shards.length));
  }

  /** The keys of the shard the video `videoId` lives on. */
  videoKeys(videoId: string): Keys {
    return this.keysFor(videoId, videoId);
  }

  /** The shard whose results stream `replyTo` names, if any. */
  shardOfReplyTo(replyTo: string): Keys | undefined {
    return this.shards.find((k) => k.acceptsReplyTo(replyTo));
  }

  /** `{prefix}:model`: the hash of what renderers need besides the results. */
  get model(): string {
    return `${this.prefix}:model`;
  }
}
