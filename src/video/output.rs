//! A tracked video's output (DESIGN §13): one `frame` entry per recorded frame, in frame order,
//! then the `done` summary.

use hmr2_client::{
    BoxSource, ErrorBody, ErrorCode, Status, TrackInfo, TrackedPerson, VideoDone, VideoFrame,
    VideoStatus, VideoTimings,
};
use hmr2_track::{record, FrameRecord, FrameStatus, Tracked};

use crate::camera::{self, FullCam};

/// Counts of a video's frames for its `done` entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub ok: u64,
    pub error: u64,
    pub missing: u64,
}

impl Counts {
    pub(crate) fn of(records: &[Option<FrameRecord>]) -> Self {
        let mut c = Counts::default();
        for r in records {
            match r.as_ref().map(|r| &r.status) {
                Some(FrameStatus::Ok) => c.ok += 1,
                Some(FrameStatus::Error { .. }) => c.error += 1,
                None => c.missing += 1,
            }
        }
        c
    }
}

fn box_source(s: record::BoxSource) -> BoxSource {
    match s {
        record::BoxSource::Job => BoxSource::Job,
        record::BoxSource::Detector => BoxSource::Detector,
        record::BoxSource::Frame => BoxSource::Frame,
    }
}

/// The `frame` entries of a tracked video, for its recorded frames in order. `vertices(n, i)`
/// gives the vertices of person `i` of frame `n`, when that frame asked for them.
pub(crate) fn frames(
    video_id: &str,
    records: &[Option<FrameRecord>],
    tracked: &Tracked,
    mut vertices: impl FnMut(usize, usize) -> Option<Vec<[f32; 3]>>,
) -> Vec<VideoFrame> {
    let mut out = Vec::new();
    for (n, r) in records.iter().enumerate() {
        let Some(r) = r else { continue };
        let mut frame = VideoFrame {
            v: 1,
            video_id: video_id.to_string(),
            frame_number: n as u64,
            status: Status::Ok,
            error: None,
            people: Vec::new(),
        };
        match &r.status {
            FrameStatus::Error { code, message } => {
                frame.status = Status::Error;
                frame.error = Some(ErrorBody {
                    code: ErrorCode::from_wire(code),
                    message: message.clone(),
                });
            }
            FrameStatus::Ok => {
                let [w, h] = r.image_size;
                let people = tracked.frames.get(n).map(Vec::as_slice).unwrap_or_default();
                for (i, p) in people.iter().enumerate() {
                    let o = &p.obs;
                    let cam = FullCam {
                        cam_t: o.cam_t,
                        focal: o.focal_length,
                    };
                    frame.people.push(TrackedPerson {
                        track_id: p.track_id,
                        bbox: o.bbox,
                        score: o.score,
                        box_source: box_source(o.box_source),
                        global_orient: record::matrix_from_quat(o.global_orient),
                        body_pose: o
                            .body_pose
                            .iter()
                            .map(|q| record::matrix_from_quat(*q))
                            .collect(),
                        betas: o.betas.to_vec(),
                        pred_cam_t_full: o.cam_t,
                        focal_length: o.focal_length,
                        keypoints_2d: camera::project(&o.keypoints_3d, &cam, w, h),
                        keypoints_3d: o.keypoints_3d.to_vec(),
                        interpolated: p.interpolated,
                        vertices: if r.vertices { vertices(n, i) } else { None },
                    });
                }
            }
        }
        out.push(frame);
    }
    out
}

/// The `done` entry.
#[allow(clippy::too_many_arguments)]
pub(crate) fn done(
    video_id: &str,
    expired: bool,
    frames: u64,
    counts: Counts,
    fps: f64,
    tracked: &Tracked,
    tracking_ms: f64,
    total_ms: f64,
) -> VideoDone {
    VideoDone {
        v: 1,
        video_id: video_id.to_string(),
        status: if expired {
            VideoStatus::Expired
        } else {
            VideoStatus::Ok
        },
        frames,
        ok_frames: counts.ok,
        error_frames: counts.error,
        missing_frames: counts.missing,
        fps,
        tracks: tracked
            .tracks
            .iter()
            .map(|t| TrackInfo {
                track_id: t.track_id,
                first_frame: t.first_frame,
                last_frame: t.last_frame,
                frames: t.frames,
                interpolated_frames: t.interpolated_frames,
            })
            .collect(),
        timings_ms: VideoTimings {
            tracking: tracking_ms,
            total: total_ms,
        },
    }
}
