//! The person detector (DESIGN §12, contract `person-detector/1`): a TorchScript file that takes
//! letterboxed `uint8 [B,S,S,3]` RGB frames and returns person boxes and scores, and the mapping
//! of its boxes back onto the frame.

use std::path::Path;

use serde::Deserialize;
use tch::{CModule, Device, IValue, Kind, Tensor};

use crate::config::DetectorConfig;
use crate::error::ModelError;

/// The contract a detector file must name in its `meta()`.
pub const CONTRACT: &str = "person-detector/1";

/// What a detector file says about itself, checked at load.
#[derive(Debug, Clone, Deserialize)]
pub struct DetectorMeta {
    pub contract: String,
    pub name: String,
    /// Side `S` of the square input.
    pub input_size: u32,
    #[serde(default)]
    pub dtype: String,
    /// The exporter's recommended `detector.score_threshold` for this file (0-1), used unless
    /// the configuration sets one.
    #[serde(default)]
    pub score_threshold: Option<f32>,
    /// The IoU of the non-maximum suppression inside the file (`null`: an NMS-free detector).
    #[serde(default)]
    pub iou_threshold: Option<f32>,
    /// The file finds only the demo's synthetic figures (the tiny detector), not people in
    /// real footage.
    #[serde(default)]
    pub synthetic_only: bool,
    /// The licence of the file's weights, as the exporter states it.
    #[serde(default)]
    pub license: Option<String>,
    /// The raw JSON, for `check` and logs.
    #[serde(skip)]
    pub raw: String,
}

impl DetectorMeta {
    /// Parses and checks `meta()` against the contract.
    pub fn parse(raw: &str) -> Result<Self, ModelError> {
        let bad = |m: String| ModelError::Contract(format!("detector: {m}"));
        let mut meta: DetectorMeta = serde_json::from_str(raw).map_err(|e| {
            bad(format!(
                "meta() is not JSON with `contract`, `name` and `input_size`: {e}"
            ))
        })?;
        if meta.contract != CONTRACT {
            return Err(bad(format!(
                "meta() names contract {:?}, the worker speaks {CONTRACT:?}",
                meta.contract
            )));
        }
        if !(32..=4096).contains(&meta.input_size) {
            return Err(bad(format!(
                "input_size {} is not a plausible square side (32-4096)",
                meta.input_size
            )));
        }
        for (key, value) in [
            ("score_threshold", meta.score_threshold),
            ("iou_threshold", meta.iou_threshold),
        ] {
            if let Some(v) = value.filter(|v| !(0.0..=1.0).contains(v)) {
                return Err(bad(format!("meta() {key} {v} is not between 0 and 1")));
            }
        }
        meta.raw = raw.to_string();
        Ok(meta)
    }

    /// `name S` for logs and `check`.
    pub fn label(&self) -> String {
        format!("{} {}px", self.name, self.input_size)
    }
}

/// Where the score threshold a worker keeps detections at comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdSource {
    /// `detector.score_threshold` (file, environment or flag).
    Config,
    /// The detector file's `meta()` recommendation.
    File,
    /// Neither says: [`DEFAULT_SCORE_THRESHOLD`].
    Default,
}

impl ThresholdSource {
    /// How `check` and the start-up log name it.
    pub fn describe(self) -> &'static str {
        match self {
            ThresholdSource::Config => "detector.score_threshold",
            ThresholdSource::File => "the file's recommendation",
            ThresholdSource::Default => "the default: the file recommends none",
        }
    }
}

/// The score threshold when neither the configuration nor the file sets one (the 4D-Humans
/// demo's, for ViTDet).
pub const DEFAULT_SCORE_THRESHOLD: f32 = 0.5;

/// The score threshold to keep `meta`'s detections at: `detector.score_threshold` when the
/// configuration sets it, else the file's recommendation, else [`DEFAULT_SCORE_THRESHOLD`].
pub fn score_threshold(cfg: &DetectorConfig, meta: &DetectorMeta) -> (f32, ThresholdSource) {
    match (cfg.score_threshold, meta.score_threshold) {
        (Some(t), _) => (t, ThresholdSource::Config),
        (None, Some(t)) => (t, ThresholdSource::File),
        (None, None) => (DEFAULT_SCORE_THRESHOLD, ThresholdSource::Default),
    }
}

/// One detection, in pixels of the `S×S` letterboxed input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub bbox: [f32; 4],
    pub score: f32,
}

/// A detector the inference thread can run. Implementations live on one thread.
pub trait Detector {
    /// Runs `n` letterboxed frames (`n × S × S × 3` bytes); returns each frame's detections with
    /// a score above 0, highest first. Every device tensor is dropped before this returns.
    fn detect(&mut self, images: &[u8], n: usize) -> Result<Vec<Vec<Detection>>, ModelError>;
    /// What the detector says about itself.
    fn meta(&self) -> &DetectorMeta;
}

/// A TorchScript detector made by `python -m models.export_detector`, run through libtorch.
pub struct TorchDetector {
    module: CModule,
    device: Device,
    meta: DetectorMeta,
}

impl TorchDetector {
    /// Loads a detector file onto `device` and checks its `meta()`.
    pub fn load(path: &Path, device: Device) -> Result<Self, ModelError> {
        let (module, raw) = crate::model::load_scripted(
            path,
            device,
            "detector",
            "`python -m models.export_detector`, or models/detector-tiny.pt",
        )?;
        let meta = DetectorMeta::parse(&raw)?;
        Ok(TorchDetector {
            module,
            device,
            meta,
        })
    }

    fn run(&mut self, images: &[u8], n: usize) -> Result<Vec<Vec<Detection>>, ModelError> {
        let s = self.meta.input_size as i64;
        let contract = |m: String| ModelError::Contract(format!("detector: {m}"));
        let torch = crate::model::torch_error;
        let input = Tensor::f_from_slice(images)
            .and_then(|t| t.f_view([n as i64, s, s, 3]))
            .and_then(|t| t.f_to_device(self.device))
            .map_err(torch)?;
        let out = self
            .module
            .forward_is(&[IValue::Tensor(input)])
            .map_err(torch)?;
        let IValue::GenericDict(pairs) = out else {
            return Err(contract(
                "forward must return Dict[str, Tensor] with `boxes` and `scores`".into(),
            ));
        };
        let (mut boxes, mut scores) = (None, None);
        for (k, v) in pairs {
            if let (IValue::String(key), IValue::Tensor(t)) = (k, v) {
                match key.as_str() {
                    "boxes" => boxes = Some(t),
                    "scores" => scores = Some(t),
                    _ => {}
                }
            }
        }
        let (Some(boxes), Some(scores)) = (boxes, scores) else {
            return Err(contract(
                "forward's dict must hold `boxes` and `scores` tensors".into(),
            ));
        };
        for (name, t) in [("boxes", &boxes), ("scores", &scores)] {
            let kind = t.f_kind().map_err(torch)?;
            if kind != Kind::Float {
                return Err(contract(format!(
                    "`{name}` is {kind:?}, the contract says float32"
                )));
            }
        }
        let (bs, ss) = (boxes.size(), scores.size());
        let k = ss.get(1).copied().unwrap_or(-1);
        if ss.len() != 2 || ss[0] != n as i64 || bs != [n as i64, k, 4] {
            return Err(contract(format!(
                "outputs have shapes boxes {bs:?}, scores {ss:?}; expected [{n}, K, 4] and [{n}, K]"
            )));
        }
        let host = |t: Tensor| -> Result<Vec<f32>, ModelError> {
            let t = t
                .f_to_device(Device::Cpu)
                .and_then(|t| t.f_contiguous())
                .and_then(|t| t.f_view([-1]))
                .map_err(torch)?;
            Vec::<f32>::try_from(&t).map_err(torch)
        };
        let (boxes, scores) = (host(boxes)?, host(scores)?);
        let k = k as usize;
        Ok((0..n)
            .map(|i| {
                let mut dets: Vec<Detection> = (0..k)
                    .filter(|&j| scores[i * k + j] > 0.0)
                    .map(|j| {
                        let b = &boxes[(i * k + j) * 4..(i * k + j) * 4 + 4];
                        Detection {
                            bbox: [b[0], b[1], b[2], b[3]],
                            score: scores[i * k + j],
                        }
                    })
                    .collect();
                dets.sort_by(|a, b| b.score.total_cmp(&a.score));
                dets
            })
            .collect())
    }
}

impl Detector for TorchDetector {
    fn detect(&mut self, images: &[u8], n: usize) -> Result<Vec<Vec<Detection>>, ModelError> {
        let s = self.meta.input_size as usize;
        if images.len() != n * s * s * 3 {
            return Err(ModelError::Forward(format!(
                "{} bytes for {n} frames of {s}x{s}",
                images.len()
            )));
        }
        let _guard = tch::no_grad_guard();
        self.run(images, n)
    }

    fn meta(&self) -> &DetectorMeta {
        &self.meta
    }
}

/// The people kept of one frame's detections: mapped back from the letterbox (`/ r`, clamped
/// to the `width × height` frame), at least `score_threshold` (resolved at start-up, see
/// [`score_threshold`]; unset: [`DEFAULT_SCORE_THRESHOLD`]) and `min_box_px` on each side,
/// highest score first, at most `max_boxes`. Each comes with its score. Also returns how many
/// passed the thresholds before the cap (more than kept when the crowd was cut).
pub fn select_people(
    dets: &[Detection],
    r: f32,
    width: u32,
    height: u32,
    cfg: &DetectorConfig,
    max_boxes: usize,
) -> (Vec<([f32; 4], f32)>, usize) {
    let (w, h) = (width as f32, height as f32);
    let threshold = cfg.score_threshold.unwrap_or(DEFAULT_SCORE_THRESHOLD);
    let mut kept: Vec<([f32; 4], f32)> = dets
        .iter()
        .filter(|d| d.score >= threshold && d.score.is_finite())
        .filter_map(|d| {
            let [x1, y1, x2, y2] = d.bbox.map(|v| v / r);
            if ![x1, y1, x2, y2].iter().all(|v| v.is_finite()) {
                return None;
            }
            let b = [
                x1.clamp(0.0, w),
                y1.clamp(0.0, h),
                x2.clamp(0.0, w),
                y2.clamp(0.0, h),
            ];
            let side = (b[2] - b[0]).min(b[3] - b[1]);
            (side >= cfg.min_box_px.max(1.0)).then_some((b, d.score))
        })
        .collect();
    kept.sort_by(|a, b| b.1.total_cmp(&a.1));
    let found = kept.len();
    kept.truncate(max_boxes);
    (kept, found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, OnEmpty};

    fn cfg() -> DetectorConfig {
        DetectorConfig {
            path: "d.pt".into(),
            score_threshold: Some(0.5),
            min_box_px: 10.0,
            on_empty: OnEmpty::None,
        }
    }

    fn det(b: [f32; 4], score: f32) -> Detection {
        Detection { bbox: b, score }
    }

    #[test]
    fn meta_is_checked_against_the_contract() {
        let good = r#"{"contract":"person-detector/1","name":"tiny","input_size":320}"#;
        let m = DetectorMeta::parse(good).unwrap();
        assert_eq!(m.label(), "tiny 320px");
        let e = DetectorMeta::parse(&good.replace("/1", "/2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("person-detector/2"), "{e}");
        let e = DetectorMeta::parse(r#"{"name":"x","input_size":320}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("contract"), "{e}");
        let e = DetectorMeta::parse(&good.replace("320", "7"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("input_size 7"), "{e}");
    }

    #[test]
    fn the_configured_threshold_wins_over_the_files_which_wins_over_the_default() {
        let base = r#"{"contract":"person-detector/1","name":"yolo","input_size":640"#;
        let recommends = DetectorMeta::parse(&format!(
            r#"{base},"score_threshold":0.25,"iou_threshold":0.7,"license":"AGPL-3.0"}}"#
        ))
        .unwrap();
        assert_eq!(recommends.iou_threshold, Some(0.7));
        assert!(!recommends.synthetic_only);
        let silent = DetectorMeta::parse(&format!("{base}}}")).unwrap();
        let mut c = cfg();
        assert_eq!(
            score_threshold(&c, &recommends),
            (0.5, ThresholdSource::Config)
        );
        c.score_threshold = None;
        assert_eq!(
            score_threshold(&c, &recommends),
            (0.25, ThresholdSource::File)
        );
        assert_eq!(
            score_threshold(&c, &silent),
            (DEFAULT_SCORE_THRESHOLD, ThresholdSource::Default)
        );
        // An NMS-free file says so with null; a recommendation out of range is refused.
        let nms_free = DetectorMeta::parse(&format!(
            r#"{base},"iou_threshold":null,"synthetic_only":true}}"#
        ))
        .unwrap();
        assert_eq!(nms_free.iou_threshold, None);
        assert!(nms_free.synthetic_only);
        let e = DetectorMeta::parse(&format!(r#"{base},"score_threshold":1.5}}"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("score_threshold 1.5"), "{e}");
    }

    #[test]
    fn boxes_map_back_from_the_letterbox_and_are_clamped() {
        // A 1280x720 frame letterboxed to 320: r = 0.25.
        let dets = [
            det([40.0, 20.0, 80.0, 170.0], 0.9),
            det([300.0, 100.0, 330.0, 200.0], 0.7), // past the right edge of the frame
        ];
        let (kept, found) = select_people(&dets, 0.25, 1280, 720, &cfg(), 32);
        assert_eq!(found, 2);
        assert_eq!(kept[0], ([160.0, 80.0, 320.0, 680.0], 0.9));
        assert_eq!(kept[1].0, [1200.0, 400.0, 1280.0, 720.0]);
    }

    #[test]
    fn low_scores_tiny_boxes_and_the_surplus_are_dropped_in_score_order() {
        let dets = [
            det([0.0, 0.0, 50.0, 50.0], 0.6),
            det([0.0, 0.0, 50.0, 50.0], 0.49), // below the threshold
            det([0.0, 0.0, 50.0, 4.0], 0.99),  // 4 px tall at r = 1
            det([10.0, 10.0, 60.0, 60.0], 0.8),
            det([5.0, 5.0, 40.0, 40.0], f32::NAN),
            det([f32::INFINITY, 0.0, 1.0, 1.0], 0.95),
        ];
        let (kept, found) = select_people(&dets, 1.0, 100, 100, &cfg(), 32);
        let scores: Vec<f32> = kept.iter().map(|k| k.1).collect();
        assert_eq!(scores, [0.8, 0.6]);
        // What the thresholds drop is not counted as found.
        assert_eq!(found, 2);
        let max = Config::defaults().limits.max_boxes;
        let many: Vec<Detection> = (0..max + 5)
            .map(|i| det([0.0, 0.0, 20.0, 20.0], 0.5 + i as f32 / 1000.0))
            .collect();
        let (kept, found) = select_people(&many, 1.0, 100, 100, &cfg(), max);
        assert_eq!(kept.len(), max);
        // The cap cuts the crowd; how many were found is kept.
        assert_eq!(found, max + 5);
        assert!(kept.windows(2).all(|w| w[0].1 >= w[1].1));
    }

    #[test]
    fn a_missing_detector_file_says_how_to_get_one() {
        let e = TorchDetector::load(Path::new("/no/such/detector.pt"), Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("export_detector"), "{e}");
    }
}
