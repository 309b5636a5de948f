/**
 * The wire contract's shapes (DESIGN §3, §13), from the types generated out of the JSON Schemas
 * (`src/generated/`, `npm run gen-types`), taken by structure from each schema's root type. Error
 * and warning codes are widened to any string: the schemas list the codes of this version, and a
 * reader should expect codes a newer worker adds.
 */
import type { Job as GJob } from './generated/job.js';
import type { ModelInformation } from './generated/model.js';
import type { Result } from './generated/result.js';
import type { VideoDone as GVideoDone } from './generated/video-done.js';
import type { VideoFrame as GVideoFrame } from './generated/video-frame.js';

type GErrorBody = NonNullable<Result['error']>;
type GWarning = NonNullable<Result['warnings']>[number];

/** An error code of this version of the contract (`invalid_image`, `too_many_deliveries`, ...). */
export type KnownErrorCode = GErrorBody['code'];
/** An error code: one of {@link KnownErrorCode}, or one a newer worker added. */
export type ErrorCode = KnownErrorCode | (string & {});
/** A warning code: `non_finite_output`, or one a newer worker added. */
export type WarningCode = GWarning['code'] | (string & {});

/** A stable code and a human message. */
export type ErrorBody = Omit<GErrorBody, 'code'> & { code: ErrorCode };
/** Something an `ok` result leaves out. */
export type Warning = Omit<GWarning, 'code'> & { code: WarningCode };
/** `ok` or `error`. */
export type Status = Result['status'];
/** One person's outputs; coordinates in the full frame. */
export type Person = Result['people'][number];
/** Where a person's box came from. */
export type BoxSource = Person['box_source'];
/** Where the time of a frame went, milliseconds. */
export type Timings = Result['timings_ms'];
/** One result: the `result` field of a reply-stream entry. */
export type JobResult = Omit<Result, 'error' | 'warnings'> & { error?: ErrorBody; warnings?: Warning[] };

/** One frame of a tracked video: the `frame` field of an output-stream entry. */
export type VideoFrame = Omit<GVideoFrame, 'error'> & { error?: ErrorBody };
/** One person in one frame of a tracked video, with the id of its track. */
export type TrackedPerson = GVideoFrame['people'][number];
/** The last entry of a video's output: the `done` field. */
export type VideoDone = GVideoDone;
/** How a video ended. */
export type VideoStatus = GVideoDone['status'];
/** One track of a video. */
export type TrackInfo = GVideoDone['tracks'][number];
/** Where a video's time went, milliseconds. */
export type VideoTimings = GVideoDone['timings_ms'];

/** The `job` field of a job-stream entry. */
export type Job = GJob;
/** The `video` object of a frame of a tracked video. */
export type VideoObject = NonNullable<GJob['video']>;

/** The `{prefix}:model` hash, each field parsed from its JSON. */
export type ModelInfo = ModelInformation;
/** The model's `meta()`. */
export type ModelMeta = ModelInformation['meta'];
/** The detector's `meta()`. */
export type DetectorMeta = NonNullable<ModelInformation['detector']>;
