/**
 * The producer: add frames and whole tracked videos to the queue, wait for a video's tracked
 * output with progress, read per-frame results, read the model hash. One Redis node or a Redis
 * Cluster (ioredis `Cluster`), sharded as the workers are (DESIGN §11).
 */
import { Cluster, Redis } from 'ioredis';
import type { ClusterOptions, RedisOptions } from 'ioredis';

import { InvalidJobError, VideoTimeoutError } from './errors.js';
import type { Unreadable } from './errors.js';
import { frameBytes, openSource } from './frames.js';
import type { FrameSource } from './frames.js';
import { buildJob, checkImage, jobFields } from './job.js';
import type { FrameOptions } from './job.js';
import { Keys, Layout, MAX_ID_BYTES } from './keys.js';
import type { JobResult, ModelInfo, VideoDone, VideoFrame } from './types.js';
import { resultEntry, textField, videoEntry } from './wire.js';
import type { RawFields, ResultEntry, VideoEntry } from './wire.js';

/** Jobs per pipelined round trip. */
const CHUNK = 64;
/** Entries per XRANGE page and per XREAD. */
const PAGE = 500;
/** The longest one blocking read waits before the deadline and the abort signal are looked at. */
const BLOCK_SLICE_MS = 1000;
/** How many job ids `results()` remembers to drop duplicates: a follower's memory stays bounded. */
const DEDUPE_WINDOW = 100_000;
/** Default for {@link WaitOptions.timeoutMs}. */
const DEFAULT_WAIT_MS = 600_000;

/** A connection this client can use: one node or a cluster. */
export type Connection = Redis | Cluster;

/** How to reach the queue. */
export interface ClientOptions {
  /**
   * `redis://[user:password@]host:port[/db]` (`rediss://` for TLS), or a list of cluster seed
   * URLs. Default `redis://127.0.0.1:6379`.
   */
  url?: string | string[];
  /** Redis Cluster mode. Default: true when `url` lists more than one seed. */
  cluster?: boolean;
  /** Use this connection instead of opening one (`close()` then leaves it open). */
  redis?: Connection;
  /** Key prefix, the workers' `queue.prefix`. Default `hmr2`. */
  prefix?: string;
  /** Number of shards, the workers' `queue.shards` (the same for every worker and producer). Default 1. */
  shards?: number;
  /** Extra ioredis options for each node (timeouts, TLS settings, ...). */
  redisOptions?: RedisOptions;
  /** Extra ioredis cluster options. */
  clusterOptions?: ClusterOptions;
}

/** A frame for {@link Client.addFrames}: its image and what its job says. */
export type FrameInput = FrameOptions & { image: Uint8Array };

/** How {@link Client.submitVideo} sends a video. */
export interface SubmitOptions {
  /** Ask for the mesh vertices of each person (per frame and in the tracked output). */
  vertices?: boolean;
  /** The stream for the tracked output; default `<results>:video:<videoId>`. Must be on the video's shard. */
  replyTo?: string;
  /** Where each frame's own result goes; default the shard's results stream. Same rule. */
  frameReplyTo?: string;
  /** Raw `image` fields (default) or base64 inside the JSON. */
  raw?: boolean;
  /**
   * The number of frames, for an iterable source that is not an array: its frames are then sent
   * as they come, without reading the source whole first. Fewer frames than this is an error
   * (the frames sent stay queued and the video expires unfinished); frames past it are not read.
   */
  frames?: number;
  /** Called after every pipelined chunk with the number of frames sent so far and the total. */
  onProgress?: (sent: number, total: number) => void;
}

/** What {@link Client.submitVideo} added. Pass it to {@link Client.waitVideo}. */
export interface SubmittedVideo {
  videoId: string;
  /** The number of frames. */
  frames: number;
  fps: number;
  /** The shard the video went to. */
  shard: number;
  /** The frames' job entry ids, in frame order. */
  entryIds: string[];
  /** The stream its tracked output will be written to. */
  output: string;
  /** The stream its frames' own results go to (the progress). */
  resultsStream: string;
}

/** Where a video stands. */
export interface VideoProgress {
  videoId: string;
  /** `frames`: frames are being answered; `tracking`: all answered, tracking; `done`: output written. */
  phase: 'frames' | 'tracking' | 'done';
  /** The video's number of frames, when known (a {@link SubmittedVideo}, or `frames` given). */
  frames: number | undefined;
  /** Distinct frames answered so far (duplicates counted once). */
  answered: number;
  /** Of those, answered `ok`. */
  ok: number;
  /** Of those, answered with an error. */
  errors: number;
  /** The whole output, on the last progress (`phase` = `done`). */
  output?: VideoOutput;
}

/** A tracked video's whole output. */
export interface VideoOutput {
  /** The tracked frames, in frame order (one per frame of the video; fewer for an expired video). */
  frames: VideoFrame[];
  /** The summary: status (`ok` or `expired`), frame counts, fps, tracks, timings. */
  done: VideoDone;
  /** Entries of the output stream before the end that could not be read. */
  unreadable: Unreadable[];
}

/** How {@link Client.waitVideo} and {@link Client.videoProgress} wait. */
export interface WaitOptions {
  /** Give up (a {@link VideoTimeoutError}) after this long; default 600 000 (10 minutes); `Infinity`: never. */
  timeoutMs?: number;
  /** Called with each change of progress (reads the frames' results stream; see {@link Client.videoProgress}). */
  onProgress?: (progress: VideoProgress) => void;
  /** The output stream, for a video id whose output is not the default stream. */
  output?: string;
  /** The frames' results stream, for progress of a video id whose frames named a `reply_to`. */
  resultsStream?: string;
  /** The video's number of frames, for a video id (so progress knows when tracking starts). */
  frames?: number;
  /** Stops waiting (the promise rejects with the signal's reason). */
  signal?: AbortSignal;
}

/** How {@link Client.results} reads. */
export interface ResultsOptions {
  /** Start after this entry id; default from the beginning (`-`). */
  after?: string;
  /** Only results of this video (and, with no stream given, that video's shard). */
  videoId?: string;
  /** Keep reading new entries as they come, until `signal` aborts or `timeoutMs` passes. Default false: stop at the end. */
  follow?: boolean;
  /** With `follow`: stop after this long. Default: never. */
  timeoutMs?: number;
  /** Keep later copies of a job's result (by default only the first is given). */
  keepDuplicates?: boolean;
  /** Entries per read. Default 500. */
  count?: number;
  /** Stops reading. */
  signal?: AbortSignal;
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '<unparsable url>';
  }
}

function seedOf(url: string): { host: string; port: number } {
  const u = new URL(url);
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new Error(`${redact(url)}: a Redis URL starts with redis:// or rediss://`);
  }
  return { host: u.hostname || '127.0.0.1', port: u.port ? Number(u.port) : 6379 };
}

function open(opts: ClientOptions, cluster: boolean): Connection {
  const urls = opts.url === undefined ? ['redis://127.0.0.1:6379'] : ([] as string[]).concat(opts.url);
  if (urls.length === 0) throw new Error('no Redis URL given');
  if (!cluster) {
    if (urls.length > 1) throw new Error('several URLs are cluster seeds: set cluster: true (or give one URL)');
    seedOf(urls[0]!);
    return new Redis(urls[0]!, { maxRetriesPerRequest: 3, ...opts.redisOptions });
  }
  const first = new URL(urls[0]!);
  const tlsFlags = new Set(urls.map((u) => new URL(u).protocol));
  if (tlsFlags.size > 1) throw new Error('the seed URLs mix redis:// and rediss://');
  const nodeOptions: RedisOptions = { ...opts.redisOptions };
  if (first.username) nodeOptions.username = decodeURIComponent(first.username);
  if (first.password) nodeOptions.password = decodeURIComponent(first.password);
  if (first.protocol === 'rediss:' && nodeOptions.tls === undefined) nodeOptions.tls = {};
  return new Cluster(urls.map(seedOf), {
    redisOptions: nodeOptions,
    maxRedirections: 16,
    ...opts.clusterOptions,
  });
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason ?? new Error('aborted');
}

/** The frame results of one video seen so far, frames counted once. */
class Answered {
  private readonly seen = new Map<number, boolean>();
  ok = 0;
  errors = 0;

  add(r: JobResult): boolean {
    if (r.frame_number === undefined || this.seen.has(r.frame_number)) return false;
    const ok = r.status === 'ok';
    this.seen.set(r.frame_number, ok);
    if (ok) this.ok++;
    else this.errors++;
    return true;
  }

  get count(): number {
    return this.seen.size;
  }
}

type XReadReply = [Buffer, [Buffer, Buffer[]][]][] | null;

/** A client of one queue (one node or a cluster). */
export class Client {
  /** The connection (an ioredis `Redis` or `Cluster`). */
  readonly redis: Connection;
  /** The queue's keys, per shard. */
  readonly layout: Layout;
  /** Whether this is a Redis Cluster. */
  readonly cluster: boolean;
  private readonly owned: boolean;
  private readonly extra = new Set<Connection>();

  /** A client; the connection opens in the background. {@link Client.connect} waits for it. */
  constructor(opts: ClientOptions = {}) {
    const given = opts.redis;
    this.cluster = opts.cluster ?? (given ? given instanceof Cluster : Array.isArray(opts.url) && opts.url.length > 1);
    const shards = opts.shards ?? 1;
    this.layout = new Layout(opts.prefix ?? 'hmr2', shards, this.cluster);
    this.redis = given ?? open(opts, this.cluster);
    this.owned = given === undefined;
    // Connection errors reach the caller through the commands that fail; without a listener
    // ioredis would also print each one.
    if (this.owned) this.redis.on('error', () => {});
  }

  /**
   * A client whose connection works: the server answered a PING (on a cluster, after the slots
   * were read), or an error that names the URL.
   */
  static async connect(opts: ClientOptions = {}, timeoutMs = 10_000): Promise<Client> {
    const client = new Client(opts);
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        client.redis.ping(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } catch (e) {
      await client.close();
      const where = ([] as string[]).concat(opts.url ?? 'redis://127.0.0.1:6379').map(redact).join(', ');
      throw new Error(`cannot reach Redis at ${where}: ${(e as Error).message}`, { cause: e });
    } finally {
      clearTimeout(timer);
    }
    return client;
  }

  /** Closes the connections this client opened (not one passed as `redis`). */
  async close(): Promise<void> {
    for (const c of this.extra) c.disconnect();
    this.extra.clear();
    if (this.owned) {
      try {
        await this.redis.quit();
      } catch {
        this.redis.disconnect();
      }
    }
  }

  /** The keys of the shard a job with this `videoId` (else `jobId`) goes to. */
  keysFor(videoId: string | undefined, jobId: string): Keys {
    return this.layout.keysFor(videoId, jobId);
  }

  /**
   * Adds one frame job to its shard's job stream (`XADD <jobs> * job <json> [image <bytes>]`);
   * returns its entry id. The job is checked first (an {@link InvalidJobError} says what the
   * worker would refuse).
   */
  async addFrame(image: Uint8Array, opts: FrameOptions): Promise<string> {
    const keys = this.keysFor(opts.videoId, opts.jobId);
    const fields = jobFields(image, opts, keys);
    return (await this.redis.xadd(keys.jobs, '*', ...fields)) as string;
  }

  /**
   * Adds many frames, each to its shard, in pipelined chunks of 64 (one round trip, one shard per
   * chunk); returns their entry ids in the order of `frames`. Every job is checked before
   * anything is sent. `raw` is the default for frames that do not say (true: raw `image`
   * fields).
   */
  async addFrames(
    frames: readonly FrameInput[],
    opts: { raw?: boolean; onProgress?: (added: number, total: number) => void } = {},
  ): Promise<string[]> {
    const byShard = new Map<number, number[]>();
    frames.forEach((f, i) => {
      const keys = this.keysFor(f.videoId, f.jobId);
      checkImage(f.image);
      buildJob(f, keys);
      const list = byShard.get(keys.shard) ?? [];
      list.push(i);
      byShard.set(keys.shard, list);
    });
    const ids = new Array<string>(frames.length);
    let added = 0;
    for (const [shard, members] of [...byShard].sort((a, b) => a[0] - b[0])) {
      const keys = this.layout.shard(shard);
      for (let s = 0; s < members.length; s += CHUNK) {
        const chunk = members.slice(s, s + CHUNK);
        const pipe = this.redis.pipeline();
        for (const i of chunk) {
          const f = frames[i]!;
          pipe.xadd(keys.jobs, '*', ...jobFields(f.image, { ...f, raw: f.raw ?? opts.raw ?? true }, keys));
        }
        const replies = await this.exec(pipe, added);
        chunk.forEach((i, j) => (ids[i] = replies[j] as string));
        added += chunk.length;
        opts.onProgress?.(added, frames.length);
      }
    }
    return ids;
  }

  private async exec(pipe: ReturnType<Connection['pipeline']>, before: number): Promise<unknown[]> {
    const replies = (await pipe.exec()) ?? [];
    const failed = replies.find(([err]) => err);
    if (failed) {
      const err = failed[0] as Error;
      err.message = `${err.message} (${before} frames were added before this chunk)`;
      throw err;
    }
    return replies.map(([, v]) => v);
  }

  /**
   * Adds a whole tracked video (DESIGN §13) to its shard: frame n (from 0) becomes the job
   * `<videoId>:<n>`, every frame carrying the same `video` object (`frames`, `fps`, `replyTo`).
   * `frames` is a directory of images, an array of Buffers or paths, or an (async) iterable of
   * them (see {@link FrameSource}; an iterable is read whole first unless `opts.frames` gives its
   * length). Files are read a chunk of 64 at a time. Refused before anything is sent (an
   * {@link InvalidJobError}): no frames, an `fps` that is not a finite number above 0, a
   * `videoId` that is empty or too long for its job ids, a `replyTo` or `frameReplyTo` outside
   * the video's shard's results stream.
   */
  async submitVideo(videoId: string, frames: FrameSource, fps: number, opts: SubmitOptions = {}): Promise<SubmittedVideo> {
    if (typeof videoId !== 'string' || videoId.length === 0) throw new InvalidJobError('the video id must not be empty');
    if (typeof fps !== 'number' || !Number.isFinite(fps) || !(fps > 0)) {
      throw new InvalidJobError(`fps must be a finite number above 0, got ${fps}`);
    }
    if (opts.frames !== undefined && (!Number.isSafeInteger(opts.frames) || opts.frames < 1)) {
      throw new InvalidJobError(`frames must be an integer >= 1, got ${opts.frames}`);
    }
    const keys = this.layout.videoKeys(videoId);
    const output = keys.videoOutput(videoId, opts.replyTo);
    if (output === null) throw new InvalidJobError(`reply_to ${JSON.stringify(opts.replyTo)} is not ${keys.results} or under it`);
    if (opts.frameReplyTo !== undefined && !keys.acceptsReplyTo(opts.frameReplyTo)) {
      throw new InvalidJobError(`frameReplyTo ${JSON.stringify(opts.frameReplyTo)} is not ${keys.results} or under it`);
    }
    const { count, items } = await openSource(frames, opts.frames);
    if (count === 0) throw new InvalidJobError(`video ${JSON.stringify(videoId)} has no frames`, 'missing_image');
    if (opts.frames !== undefined && opts.frames !== count) {
      throw new InvalidJobError(`frames says ${opts.frames}, the source has ${count}`);
    }
    const longest = Buffer.byteLength(videoId) + 1 + String(count - 1).length;
    if (longest > MAX_ID_BYTES) {
      throw new InvalidJobError(
        `the video id must leave room for \`:<frame>\` in a job id of at most ${MAX_ID_BYTES} bytes (${longest})`,
      );
    }
    const video = { frames: count, fps, ...(opts.replyTo === undefined ? {} : { replyTo: opts.replyTo }) };
    const frameOpts = (n: number): FrameOptions => ({
      jobId: `${videoId}:${n}`,
      videoId,
      frameNumber: n,
      video,
      vertices: opts.vertices ?? false,
      raw: opts.raw ?? true,
      ...(opts.frameReplyTo === undefined ? {} : { replyTo: opts.frameReplyTo }),
    });
    buildJob(frameOpts(0), keys);
    const entryIds: string[] = [];
    let n = 0;
    while (n < count) {
      const start = n;
      const batch: Promise<Buffer>[] = [];
      while (n - start < CHUNK && n < count) {
        const next = await items.next();
        if (next.done) break;
        batch.push(frameBytes(next.value));
        n++;
      }
      if (batch.length === 0) {
        throw new InvalidJobError(
          `${count} frames were announced, ${n} came` + (n > 0 ? ` (frames 0 to ${n - 1} are queued)` : ''),
          'missing_image',
        );
      }
      const images = await Promise.all(batch);
      const pipe = this.redis.pipeline();
      images.forEach((image, j) => pipe.xadd(keys.jobs, '*', ...jobFields(image, frameOpts(start + j), keys)));
      const replies = await this.exec(pipe, start);
      for (const id of replies) entryIds.push(id as string);
      opts.onProgress?.(n, count);
    }
    return {
      videoId,
      frames: count,
      fps,
      shard: keys.shard,
      entryIds,
      output,
      resultsStream: opts.frameReplyTo ?? keys.results,
    };
  }

  /** A connection of its own for blocking reads, closed by `release`. */
  private blockingConnection(): Connection {
    const c = this.redis.duplicate();
    c.on('error', () => {});
    this.extra.add(c);
    return c;
  }

  private release(c: Connection): void {
    this.extra.delete(c);
    c.disconnect();
  }

  /**
   * The progress of a video as it runs, as an async iterator: one {@link VideoProgress} at the
   * start and at each change (frames answered, tracking started), the last one with `phase` =
   * `done` and the whole `output`. Progress comes from the frames' own results (their reply
   * stream: the shard's results stream, or the submission's `frameReplyTo`), read from the
   * video's first job on; with `vertices` those are large, so a video with its own
   * `frameReplyTo` stream costs the least to follow. Throws a {@link VideoTimeoutError} after
   * `timeoutMs`. Reads on a connection of its own (blocking reads of at most 1 s).
   */
  async *videoProgress(video: string | SubmittedVideo, opts: Omit<WaitOptions, 'onProgress'> = {}): AsyncGenerator<VideoProgress> {
    yield* this.follow(video, opts, true);
  }

  /**
   * Waits for a video's tracked output and returns it whole: every tracked frame in frame order
   * and the `done` summary. A video already done returns at once (its output stream is read from
   * the beginning). `onProgress` gets each change of progress (see {@link Client.videoProgress});
   * without it the frames' results are not read at all. Throws a {@link VideoTimeoutError} when
   * no `done` came within `timeoutMs` (default 10 minutes). Entries of other videos (a shared
   * output stream) are skipped.
   */
  async waitVideo(video: string | SubmittedVideo, opts: WaitOptions = {}): Promise<VideoOutput> {
    for await (const p of this.follow(video, opts, opts.onProgress !== undefined)) {
      opts.onProgress?.(p);
      if (p.output) return p.output;
    }
    throw new Error('unreachable: the progress of a video ends with its output');
  }

  private async *follow(video: string | SubmittedVideo, opts: WaitOptions, progress: boolean): AsyncGenerator<VideoProgress> {
    const submitted = typeof video === 'string' ? undefined : video;
    const videoId = typeof video === 'string' ? video : video.videoId;
    const keys = this.layout.videoKeys(videoId);
    const output = opts.output ?? submitted?.output ?? keys.videoOutput(videoId);
    if (output === null) throw new InvalidJobError(`no output stream for video ${JSON.stringify(videoId)}`);
    const resultsStream = opts.resultsStream ?? submitted?.resultsStream ?? keys.results;
    const total = opts.frames ?? submitted?.frames;
    const timeoutMs = opts.timeoutMs ?? DEFAULT_WAIT_MS;
    const deadline = Date.now() + timeoutMs;
    // A frame's result is written after its job was added, by the same server: results of this
    // video come after the first job's time.
    const firstMs = submitted?.entryIds[0]?.split('-')[0];
    let afterResults = firstMs ? `${Math.max(0, Number(firstMs) - 1)}-0` : '0-0';
    let afterOutput = '0-0';
    const frames: VideoFrame[] = [];
    const unreadable: Unreadable[] = [];
    const answered = new Answered();
    const state = (phase: VideoProgress['phase']): VideoProgress => ({
      videoId,
      phase,
      frames: total,
      answered: answered.count,
      ok: answered.ok,
      errors: answered.errors,
    });
    let last = state('frames');
    if (progress) yield last;
    const conn = this.blockingConnection();
    try {
      for (;;) {
        throwIfAborted(opts.signal);
        const left = deadline - Date.now();
        if (left <= 0) {
          throw new VideoTimeoutError(videoId, output, timeoutMs, frames.length, progress ? answered.count : undefined);
        }
        const block = Math.max(1, Math.min(left, BLOCK_SLICE_MS));
        const streams = progress && resultsStream !== output ? [output, resultsStream] : [output];
        const cursors = progress && resultsStream !== output ? [afterOutput, afterResults] : [afterOutput];
        const reply = (await conn.xreadBuffer('COUNT', PAGE, 'BLOCK', block, 'STREAMS', ...streams, ...cursors)) as XReadReply;
        let changed = false;
        // The frames' results first: a video's last results and its output can come in one read.
        const replies = (reply ?? []).slice().sort((a, b) => Number(a[0].toString() === output) - Number(b[0].toString() === output));
        for (const [name, entries] of replies) {
          const stream = name.toString();
          for (const [rawId, fields] of entries) {
            const entryId = rawId.toString();
            if (stream === output) {
              afterOutput = entryId;
              const e = videoEntry(output, entryId, fields);
              if (e.frame) {
                if (e.frame.video_id === videoId) frames.push(e.frame);
              } else if (e.done) {
                if (e.done.video_id === videoId) {
                  // The summary's counts are final, whatever of the results was read.
                  yield {
                    ...state('done'),
                    frames: total ?? e.done.frames,
                    answered: e.done.ok_frames + e.done.error_frames,
                    ok: e.done.ok_frames,
                    errors: e.done.error_frames,
                    output: { frames, done: e.done, unreadable },
                  };
                  return;
                }
              } else {
                unreadable.push(e.unreadable);
              }
            } else {
              afterResults = entryId;
              const r = resultEntry(stream, entryId, fields);
              if (r.result?.video_id === videoId && answered.add(r.result)) changed = true;
            }
          }
        }
        if (changed && progress) {
          const phase = total !== undefined && answered.count >= total ? 'tracking' : 'frames';
          const now = state(phase);
          if (now.answered !== last.answered || now.phase !== last.phase) {
            last = now;
            yield now;
          }
        }
      }
    } finally {
      this.release(conn);
    }
  }

  /**
   * Up to `count` entries of a video output stream after the entry id `after` (`-`: from the
   * beginning), each on its own: an entry that cannot be read comes back as `unreadable` in its
   * place.
   */
  async readVideo(stream: string, opts: { after?: string; count?: number } = {}): Promise<VideoEntry[]> {
    const page = await this.range(this.redis, stream, opts.after ?? '-', opts.count ?? PAGE);
    return page.map(([id, fields]) => videoEntry(stream, id.toString(), fields));
  }

  /**
   * Up to `count` entries of a reply stream after the entry id `after` (`-`: from the
   * beginning), each on its own: an entry without a readable result comes back as `unreadable`
   * (naming the stream and entry), never as a failed page. Duplicates are kept; see
   * {@link Client.results} for a reader that drops them.
   */
  async readResults(stream: string, opts: { after?: string; count?: number } = {}): Promise<ResultEntry[]> {
    const page = await this.range(this.redis, stream, opts.after ?? '-', opts.count ?? PAGE);
    return page.map(([id, fields]) => resultEntry(stream, id.toString(), fields));
  }

  private async range(conn: Connection, stream: string, after: string, count: number): Promise<[Buffer, RawFields][]> {
    const start = after === '' || after === '-' ? '-' : `(${after}`;
    return (await conn.xrangeBuffer(stream, start, '+', 'COUNT', count)) as [Buffer, RawFields][];
  }

  /**
   * The entries of a reply stream as an async iterator, page by page: each a `result`, or an
   * `unreadable` value for an entry that cannot be read (never a thrown error: the reader moves
   * past it). Delivery is at-least-once, so a job can be answered twice: only the first result of
   * each job (by `job_id`, else by the job's `entry_id`) is given unless `keepDuplicates`.
   * `stream` defaults to the results stream of `videoId`'s shard (of the only shard when the
   * queue has one). Stops at the end of the stream, or with `follow` keeps waiting for new
   * entries until `signal` aborts or `timeoutMs` passes.
   */
  async *results(stream?: string, opts: ResultsOptions = {}): AsyncGenerator<ResultEntry> {
    let name = stream;
    if (name === undefined) {
      if (opts.videoId !== undefined) name = this.layout.videoKeys(opts.videoId).results;
      else if (this.layout.length === 1) name = this.layout.shard(0).results;
      else throw new Error(`the queue has ${this.layout.length} shards: name the results stream, or a videoId`);
    }
    const count = opts.count ?? PAGE;
    const seen = new Set<string>();
    const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
    let after = opts.after ?? '-';
    let conn: Connection | undefined;
    try {
      for (;;) {
        throwIfAborted(opts.signal);
        let page: [Buffer, RawFields][];
        if (!opts.follow) {
          page = await this.range(this.redis, name, after, count);
        } else {
          const left = deadline - Date.now();
          if (left <= 0) return;
          conn ??= this.blockingConnection();
          const cursor = after === '-' || after === '' ? '0-0' : after;
          const block = Math.max(1, Math.min(left, BLOCK_SLICE_MS));
          const reply = (await conn.xreadBuffer('COUNT', count, 'BLOCK', block, 'STREAMS', name, cursor)) as XReadReply;
          page = reply?.[0]?.[1] ?? [];
        }
        for (const [rawId, fields] of page) {
          const entryId = rawId.toString();
          after = entryId;
          const e = resultEntry(name, entryId, fields);
          if (e.result) {
            if (opts.videoId !== undefined && e.result.video_id !== opts.videoId) continue;
            if (!opts.keepDuplicates) {
              const key = e.result.job_id !== null ? `j:${e.result.job_id}` : `e:${e.result.entry_id}`;
              if (seen.has(key)) continue;
              seen.add(key);
              if (seen.size > DEDUPE_WINDOW) {
                // A Set iterates in insertion order: forget the oldest id.
                seen.delete(seen.values().next().value as string);
              }
            }
          }
          yield e;
        }
        if (!opts.follow && page.length < count) return;
      }
    } finally {
      if (conn) this.release(conn);
    }
  }

  /**
   * The `{prefix}:model` hash the workers fill at start-up, each field parsed from its JSON
   * (`meta`, `detector`, `faces`, `parents`, `joint_names`, `keypoint_names`, `topology`), or
   * `null` when no worker has written it yet.
   */
  async modelInfo(): Promise<ModelInfo | null> {
    const raw = (await this.redis.hgetallBuffer(this.layout.model)) as Record<string, Buffer>;
    const names = Object.keys(raw);
    if (names.length === 0) return null;
    const info: Record<string, unknown> = {};
    for (const name of names) {
      let text: string;
      try {
        text = textField([name, raw[name]!], name)!;
      } catch (e) {
        throw new Error(`${this.layout.model} field ${name}: ${(e as Error).message}`);
      }
      try {
        info[name] = JSON.parse(text);
      } catch (e) {
        throw new Error(`${this.layout.model} field ${name} is not JSON: ${(e as Error).message}`);
      }
    }
    if (typeof info['meta'] !== 'object' || info['meta'] === null) {
      throw new Error(`${this.layout.model} has no \`meta\` object (fields: ${names.join(', ')})`);
    }
    return info as unknown as ModelInfo;
  }

}
