//! Postprocess: model outputs of one job's people → the result of the wire contract.

use hmr2_client::{Echo, JobResult, Person, Timings};

use crate::camera;
use crate::model::{FrameOutput, NUM_KEYPOINTS};
use crate::worker::prepare::PersonBox;

/// Identity of the worker, echoed in every result.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    pub worker: String,
    pub device: String,
    pub model: String,
}

fn mat3(v: &[f32]) -> [[f32; 3]; 3] {
    [[v[0], v[1], v[2]], [v[3], v[4], v[5]], [v[6], v[7], v[8]]]
}

fn triples(v: &[f32]) -> Vec<[f32; 3]> {
    v.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect()
}

/// One person's result: full-frame camera and 2D keypoints from the crop camera.
pub(crate) fn person(
    p: &PersonBox,
    out: FrameOutput,
    image_size: [u32; 2],
    vertices: bool,
) -> Person {
    let [w, h] = image_size;
    let pred_cam = out.pred_cam();
    let cam = camera::cam_full(pred_cam, p.crop.center, p.crop.size, w, h);
    let keypoints_3d = triples(out.keypoints_3d());
    debug_assert_eq!(keypoints_3d.len(), NUM_KEYPOINTS);
    let keypoints_2d = camera::project(&keypoints_3d, &cam, w, h);
    Person {
        bbox: p.bbox,
        box_source: p.source,
        score: p.score,
        box_center: p.crop.center,
        box_size: p.crop.size,
        pred_cam,
        pred_cam_t_full: cam.cam_t,
        focal_length: cam.focal,
        global_orient: mat3(out.global_orient()),
        body_pose: out.body_pose().chunks_exact(9).map(mat3).collect(),
        betas: out.betas().to_vec(),
        keypoints_3d,
        keypoints_2d,
        vertices: if vertices {
            out.vertices().map(triples)
        } else {
            None
        },
    }
}

/// A successful result.
pub(crate) fn ok_result(
    entry_id: &str,
    echo: &Echo,
    image_size: [u32; 2],
    people: Vec<Person>,
    timings_ms: Timings,
    origin: &Origin,
) -> JobResult {
    JobResult {
        image_size: Some(image_size),
        people,
        timings_ms,
        worker: origin.worker.clone(),
        device: origin.device.clone(),
        model: origin.model.clone(),
        ..JobResult::new(entry_id, echo)
    }
}
