//! Postprocess: model outputs of one job's people → the result of the wire contract.
//!
//! JSON has no NaN or ±∞ (serde writes them as `null`, which no reader of the contract
//! accepts), so a person whose result would hold one (a model output, or the camera and 2D
//! keypoints derived from them) is left out of `people`: the result stays `ok` and gets a
//! `non_finite_output` warning naming the person, its box and the first such field, and
//! `hmr2_people_dropped_total{reason="non_finite"}` counts it.

use hmr2_client::{Echo, JobResult, Person, Timings, Warning, WarningCode};
use metrics::counter;

use crate::camera;
use crate::metrics as m;
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

/// A person left out of a result: its box, and the first field that holds a non-finite number.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NonFinite {
    bbox: [f32; 4],
    field: &'static str,
    value: f32,
}

/// The first field of `p` (in the contract's order) holding NaN or ±∞, with that value.
fn first_non_finite(p: &Person) -> Option<(&'static str, f32)> {
    let fields: [(&'static str, &mut dyn Iterator<Item = f32>); 13] = [
        ("box", &mut p.bbox.iter().copied()),
        ("score", &mut p.score.into_iter()),
        ("box_center", &mut p.box_center.iter().copied()),
        ("box_size", &mut std::iter::once(p.box_size)),
        ("pred_cam", &mut p.pred_cam.iter().copied()),
        ("pred_cam_t_full", &mut p.pred_cam_t_full.iter().copied()),
        ("focal_length", &mut std::iter::once(p.focal_length)),
        (
            "global_orient",
            &mut p.global_orient.iter().flatten().copied(),
        ),
        (
            "body_pose",
            &mut p.body_pose.iter().flatten().flatten().copied(),
        ),
        ("betas", &mut p.betas.iter().copied()),
        (
            "keypoints_3d",
            &mut p.keypoints_3d.iter().flatten().copied(),
        ),
        (
            "keypoints_2d",
            &mut p.keypoints_2d.iter().flatten().copied(),
        ),
        (
            "vertices",
            &mut p.vertices.iter().flatten().flatten().copied(),
        ),
    ];
    for (name, values) in fields {
        for v in values {
            if !v.is_finite() {
                return Some((name, v));
            }
        }
    }
    None
}

/// One person's result: full-frame camera and 2D keypoints from the crop camera; or, when any
/// of its numbers is not finite, why it is left out.
pub(crate) fn person(
    p: &PersonBox,
    out: FrameOutput,
    image_size: [u32; 2],
    vertices: bool,
) -> Result<Person, NonFinite> {
    let [w, h] = image_size;
    let pred_cam = out.pred_cam();
    let cam = camera::cam_full(pred_cam, p.crop.center, p.crop.size, w, h);
    let keypoints_3d = triples(out.keypoints_3d());
    debug_assert_eq!(keypoints_3d.len(), NUM_KEYPOINTS);
    let keypoints_2d = camera::project(&keypoints_3d, &cam, w, h);
    let person = Person {
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
    };
    match first_non_finite(&person) {
        None => Ok(person),
        Some((field, value)) => Err(NonFinite {
            bbox: p.bbox,
            field,
            value,
        }),
    }
}

/// The people of one job, in order, and a warning for each person left out.
#[derive(Debug, Default)]
pub(crate) struct People {
    people: Vec<Person>,
    warnings: Vec<Warning>,
}

/// Collects [`person`]'s answers for a job's people, in the job's order: a person left out
/// becomes a warning naming its place in that order, and is counted and logged.
impl FromIterator<Result<Person, NonFinite>> for People {
    fn from_iter<I: IntoIterator<Item = Result<Person, NonFinite>>>(iter: I) -> Self {
        let mut out = People::default();
        for (i, p) in iter.into_iter().enumerate() {
            match p {
                Ok(p) => out.people.push(p),
                Err(NonFinite { bbox, field, value }) => {
                    let message =
                        format!("person {i} (box {bbox:?}) dropped: {field} holds {value}");
                    tracing::warn!(person = i, field, "{message}");
                    counter!(m::PEOPLE_DROPPED, "reason" => m::dropped::NON_FINITE).increment(1);
                    out.warnings.push(Warning {
                        code: WarningCode::NonFiniteOutput,
                        message,
                    });
                }
            }
        }
        out
    }
}

/// A successful result.
pub(crate) fn ok_result(
    entry_id: &str,
    echo: &Echo,
    image_size: [u32; 2],
    people: People,
    timings_ms: Timings,
    origin: &Origin,
) -> JobResult {
    JobResult {
        image_size: Some(image_size),
        people: people.people,
        warnings: people.warnings,
        timings_ms,
        worker: origin.worker.clone(),
        device: origin.device.clone(),
        model: origin.model.clone(),
        ..JobResult::new(entry_id, echo)
    }
}

#[cfg(test)]
mod tests {
    use hmr2_client::BoxSource;

    use super::*;
    use crate::image::crop_box;
    use crate::model::{BatchOutput, NUM_VERTICES};

    const SIZE: [u32; 2] = [640, 480];

    fn person_box(x: f32) -> PersonBox {
        let bbox = [x, 100.0, x + 90.0, 220.0];
        PersonBox {
            bbox,
            crop: crop_box(bbox),
            source: BoxSource::Job,
            score: None,
        }
    }

    /// A stand-in batch of five people, each with `pred_cam` (1, 0, 0) and one flaw: none; NaN
    /// in `keypoints_3d`; +∞ in `betas`; a 3D keypoint in the camera plane (finite outputs, but
    /// its 2D projection is not); NaN in the vertices only.
    fn flawed() -> (Vec<PersonBox>, Vec<FrameOutput>) {
        let boxes: Vec<PersonBox> = (0..5)
            .map(|i| person_box(20.0 + 100.0 * i as f32))
            .collect();
        let mut b = BatchOutput::zeros(5);
        b.pred_cam = [1.0, 0.0, 0.0].repeat(5);
        let kp = |i: usize, j: usize| (i * NUM_KEYPOINTS + j) * 3;
        b.keypoints_3d[kp(1, 7) + 1] = f32::NAN;
        b.betas[2 * 10 + 4] = f32::INFINITY;
        let cam = camera::cam_full(
            [1.0, 0.0, 0.0],
            boxes[3].crop.center,
            boxes[3].crop.size,
            640,
            480,
        );
        b.keypoints_3d[kp(3, 0) + 2] = -cam.cam_t[2];
        let mut v = vec![0.0; 5 * NUM_VERTICES * 3];
        v[4 * NUM_VERTICES * 3 + 11] = f32::NEG_INFINITY;
        b.vertices = Some(v);
        (boxes, b.into_frames())
    }

    fn people(vertices: bool) -> People {
        let (boxes, outs) = flawed();
        boxes
            .iter()
            .zip(outs)
            .map(|(p, o)| person(p, o, SIZE, vertices))
            .collect()
    }

    #[test]
    fn a_person_with_a_non_finite_output_is_dropped_with_a_warning() {
        let got = people(true);
        let kept: Vec<[f32; 4]> = got.people.iter().map(|p| p.bbox).collect();
        assert_eq!(kept, [person_box(20.0).bbox]);
        let messages: Vec<&str> = got.warnings.iter().map(|w| w.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "person 1 (box [120.0, 100.0, 210.0, 220.0]) dropped: keypoints_3d holds NaN",
                "person 2 (box [220.0, 100.0, 310.0, 220.0]) dropped: betas holds inf",
                "person 3 (box [320.0, 100.0, 410.0, 220.0]) dropped: keypoints_2d holds inf",
                "person 4 (box [420.0, 100.0, 510.0, 220.0]) dropped: vertices holds -inf",
            ]
        );
        assert!(got
            .warnings
            .iter()
            .all(|w| w.code == WarningCode::NonFiniteOutput));
    }

    #[test]
    fn vertices_left_out_of_the_result_do_not_drop_their_person() {
        let got = people(false);
        assert_eq!(got.people.len(), 2);
        assert_eq!(got.people[1].bbox, person_box(420.0).bbox);
        assert_eq!(got.people[1].vertices, None);
        assert_eq!(got.warnings.len(), 3);
    }

    #[test]
    fn the_result_holds_no_null_and_reads_back() {
        let echo = Echo {
            job_id: Some("j".into()),
            ..Echo::default()
        };
        let r = ok_result(
            "1-0",
            &echo,
            SIZE,
            people(true),
            Timings::default(),
            &Origin::default(),
        );
        let json = r.to_json();
        let null = json
            .find("null")
            .map(|i| &json[i.saturating_sub(80)..i + 4]);
        assert_eq!(null, None, "a null in the result");
        let back = JobResult::from_json(&json).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.people.len(), 1);
        assert_eq!(back.warnings.len(), 4);
        // Nothing dropped: no `warnings` key, as before.
        let (boxes, outs) = flawed();
        let clean: People = [person(&boxes[0], outs[0].clone(), SIZE, true)]
            .into_iter()
            .collect();
        let r = ok_result(
            "1-0",
            &Echo::default(),
            SIZE,
            clean,
            Timings::default(),
            &Origin::default(),
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert!(v.get("warnings").is_none(), "{v}");
        assert_eq!(v["people"].as_array().unwrap().len(), 1);
    }
}
