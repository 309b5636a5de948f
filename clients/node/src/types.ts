/**
 * The wire contract's shapes (DESIGN §3, §13), from the types generated out of the JSON Schemas
 * (`src/generated/`, `npm run gen-types`). Error and warning codes are widened to any string: the
 * schemas list the codes of this version, and a reader should expect codes a newer worker adds.
 */
import type * as G_Job from './generated/job.js';
import type * as G_Model from './generated/model.js';
import type * as G_Result from './generated/result.js';
import type * as G_Done from './generated/video-done.js';
import type * as G_Frame from './generated/video-frame.js';

/** An error code of this version of the contract (`invalid_image`, `too_many_deliveries`, ...). */
export type KnownErrorCode = G_Result.ErrorCode;
/** An error code: one of {@link KnownErrorCode}, or one a newer worker added. */
export type ErrorCode = KnownErrorCode | (string & {});
/** A warning code: `non_finite_output`, or one a newer worker added. */
export type WarningCode = G_Result.WarningCode | (string & {});

/** A stable code and a human message. */
export type ErrorBody = Omit<G_Result.ErrorBody, 'code'> & { code: ErrorCode };
/** Something an `ok` result leaves out. */
export type Warning = Omit<G_Result.Warning, 'code'> & { code: WarningCode };
/** `ok` or `error`. */
export type Status = G_Result.Result['status'];
/** Where a person's box came from. */
export type BoxSource = G_Result.Person['box_source'];
/** Where the time of a frame went, milliseconds. */
export type Timings = G_Result.Timings;
/** One person's outputs; coordinates in the full frame. */
export type Person = G_Result.Person;
/** One result: the `result` field of a reply-stream entry. */
export type JobResult = Omit<G_Result.Result, 'error' | 'warnings'> & { error?: ErrorBody; warnings?: Warning[] };

/** One person in one frame of a tracked video, with the id of its track. */
export type TrackedPerson = G_Frame.TrackedPerson;
/** One frame of a tracked video: the `frame` field of an output-stream entry. */
export type VideoFrame = Omit<G_Frame.VideoFrame, 'error'> & { error?: ErrorBody };
/** One track of a video. */
export type TrackInfo = G_Done.TrackInfo;
/** Where a video's time went, milliseconds. */
export type VideoTimings = G_Done.VideoTimings;
/** How a video ended. */
export type VideoStatus = G_Done.VideoDone['status'];
/** The last entry of a video's output: the `done` field. */
export type VideoDone = G_Done.VideoDone;

/** The `job` field of a job-stream entry. */
export type Job = G_Job.Job;
/** The `video` object of a frame of a tracked video. */
export type VideoObject = G_Job.Video;

/** The `{prefix}:model` hash, each field parsed from its JSON. */
export type ModelInfo = G_Model.ModelInformation;
/** The model's `meta()`. */
export type ModelMeta = G_Model.ModelMeta;
/** The detector's `meta()`. */
export type DetectorMeta = G_Model.DetectorMeta;
