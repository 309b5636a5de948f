/**
 * The wire contract's shapes (DESIGN §3, §13).
 */

/** `ok` or `error`. */
export type Status = 'ok' | 'error';

/** A stable code and a human message. Codes outside the closed set are a newer worker's. */
export interface ErrorBody {
  code: string;
  message: string;
}

/** Something an `ok` result leaves out. */
export interface Warning {
  code: string;
  message: string;
}

/** Where the time went, milliseconds. */
export interface Timings {
  queue_wait: number;
  decode: number;
  inference: number;
  total: number;
}

/** Where a person's box came from. */
export type BoxSource = 'job' | 'detector' | 'frame';

/** One person's outputs; coordinates in the full frame. */
export interface Person {
  box: [number, number, number, number];
  box_source?: BoxSource;
  score?: number;
  box_center: [number, number];
  box_size: number;
  pred_cam: [number, number, number];
  pred_cam_t_full: [number, number, number];
  focal_length: number;
  global_orient: number[][];
  body_pose: number[][][];
  betas: number[];
  keypoints_3d: number[][];
  keypoints_2d: number[][];
  vertices?: number[][];
}

/** One result: the `result` field of a reply-stream entry. */
export interface JobResult {
  v: number;
  job_id: string | null;
  entry_id: string;
  video_id?: string;
  frame_number?: number;
  status: Status;
  error?: ErrorBody;
  image_size?: [number, number];
  people?: Person[];
  detected?: number;
  warnings?: Warning[];
  timings_ms?: Timings;
  worker?: string;
  device?: string;
  model?: string;
}

/** One person in one frame of a tracked video. */
export interface TrackedPerson {
  track_id: number;
  box: [number, number, number, number];
  score?: number;
  box_source: BoxSource;
  global_orient: number[][];
  body_pose: number[][][];
  betas: number[];
  pred_cam_t_full: [number, number, number];
  focal_length: number;
  keypoints_2d: number[][];
  keypoints_3d: number[][];
  interpolated: boolean;
  vertices?: number[][];
}

/** One frame of a tracked video: the `frame` field of an output-stream entry. */
export interface VideoFrame {
  v: number;
  video_id: string;
  frame_number: number;
  status: Status;
  error?: ErrorBody;
  people?: TrackedPerson[];
}

/** One track of a video. */
export interface TrackInfo {
  track_id: number;
  first_frame: number;
  last_frame: number;
  frames: number;
  interpolated_frames: number;
}

/** How a video ended. */
export type VideoStatus = 'ok' | 'expired';

/** The last entry of a video's output: the `done` field. */
export interface VideoDone {
  v: number;
  video_id: string;
  status: VideoStatus;
  frames: number;
  ok_frames: number;
  error_frames: number;
  missing_frames: number;
  fps: number;
  tracks?: TrackInfo[];
  timings_ms: { tracking: number; total: number };
}

/** The `video` object of a frame of a tracked video. */
export interface VideoObject {
  frames: number;
  fps: number;
  reply_to?: string;
}

/** The `job` field of a job-stream entry. */
export interface Job {
  v?: number;
  job_id: string;
  video_id?: string;
  frame_number?: number;
  image_base64?: string;
  boxes?: [number, number, number, number][];
  reply_to?: string;
  include?: 'vertices'[];
  video?: VideoObject;
}
