/**
 * A frame or video this client refuses to add, before anything is sent: the worker would answer
 * it with an error (`invalid_job` and the like), or it could never be answered at all.
 */
export class InvalidJobError extends Error {
  /** The error code the worker would answer with (`invalid_job`, `missing_image`, `invalid_box`). */
  readonly code: string;

  constructor(message: string, code = 'invalid_job') {
    super(message);
    this.name = 'InvalidJobError';
    this.code = code;
  }
}

/** {@link Client.waitVideo} saw no `done` entry for the video within its `timeoutMs`. */
export class VideoTimeoutError extends Error {
  /** The video waited for. */
  readonly videoId: string;
  /** Its output stream. */
  readonly output: string;
  /** Tracked frames read before the time ran out (the output is written whole, so normally none). */
  readonly framesRead: number;
  /** Frames answered (per-frame results seen) when the time ran out, when progress was followed. */
  readonly answered: number | undefined;

  constructor(videoId: string, output: string, timeoutMs: number, framesRead: number, answered?: number) {
    const seen = answered === undefined ? '' : ` (${answered} frames answered so far)`;
    super(`video ${JSON.stringify(videoId)}: no \`done\` entry on ${output} within ${timeoutMs} ms${seen}`);
    this.name = 'VideoTimeoutError';
    this.videoId = videoId;
    this.output = output;
    this.framesRead = framesRead;
    this.answered = answered;
  }
}

/**
 * A stream entry without a readable `result` (or `frame`/`done`) field: missing, not UTF-8, or
 * not a v1 value. Returned in place of the entry, never thrown, so one bad entry neither fails a
 * page nor stops a reader whose cursor would otherwise never pass it.
 */
export interface Unreadable {
  /** The stream. */
  stream: string;
  /** The entry's id. */
  entryId: string;
  /** What is wrong with it. */
  reason: string;
}
