//! The model behind a small trait: the worker loop runs the tiny TorchScript model on a CPU in
//! tests and the full model on a GPU with no other change.

use std::path::Path;

use serde::Deserialize;
use tch::{CModule, Device, IValue, Kind, Tensor};

use crate::config::DeviceSpec;
use crate::error::ModelError;
use crate::image::CROP;

/// Outputs the worker needs from every model.
pub const REQUIRED_OUTPUTS: &[&str] = &[
    "pred_cam",
    "global_orient",
    "body_pose",
    "betas",
    "keypoints_3d",
];

/// Number of 3D keypoints (25 OpenPose-order joints + 19 J19 joints).
pub const NUM_KEYPOINTS: usize = 44;
/// Number of SMPL vertices.
pub const NUM_VERTICES: usize = 6890;

/// What a model file says about itself (`meta()`), checked at load.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelMeta {
    pub name: String,
    #[serde(default)]
    pub preset: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub dtype: String,
    pub input_size: [usize; 2],
    pub outputs: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub smpl: String,
    #[serde(default)]
    pub weights: String,
    /// The raw JSON, for `check` and logs.
    #[serde(skip)]
    pub raw: String,
}

impl ModelMeta {
    /// Parses and checks `meta()` against the worker's contract.
    pub fn parse(raw: &str) -> Result<Self, ModelError> {
        let mut meta: ModelMeta = serde_json::from_str(raw)
            .map_err(|e| ModelError::Contract(format!("meta() is not the expected JSON: {e}")))?;
        meta.raw = raw.to_string();
        if meta.input_size != [CROP, CROP] {
            return Err(ModelError::Contract(format!(
                "model expects {:?} crops, the worker makes [{CROP}, {CROP}]",
                meta.input_size
            )));
        }
        for key in REQUIRED_OUTPUTS {
            if !meta.outputs.contains_key(*key) {
                return Err(ModelError::Contract(format!(
                    "model has no `{key}` output (it has: {})",
                    meta.outputs.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        Ok(meta)
    }

    /// Short label for results and `hmr2_build_info`: `hmr2 tiny bf16`.
    pub fn label(&self) -> String {
        [
            self.name.as_str(),
            self.preset.as_str(),
            self.dtype.as_str(),
        ]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// Host-side outputs of one forward pass of `n` crops, row-major `f32`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutput {
    pub n: usize,
    /// `[n, 3]` weak-perspective camera (s, tx, ty).
    pub pred_cam: Vec<f32>,
    /// `[n, 9]` root rotation matrix.
    pub global_orient: Vec<f32>,
    /// `[n, 23 * 9]` joint rotation matrices.
    pub body_pose: Vec<f32>,
    /// `[n, 10]` shape coefficients.
    pub betas: Vec<f32>,
    /// `[n, 44 * 3]` 3D keypoints, metres, camera-aligned.
    pub keypoints_3d: Vec<f32>,
    /// `[n, 6890 * 3]` vertices when requested and available.
    pub vertices: Option<Vec<f32>>,
}

/// A model the inference thread can run. Implementations live on one thread.
pub trait Model {
    /// Runs `n` crops (`n * 256 * 256 * 3` RGB bytes) and returns host-side outputs. Every
    /// device tensor is dropped before this returns.
    fn forward(
        &mut self,
        crops: &[u8],
        n: usize,
        vertices: bool,
    ) -> Result<BatchOutput, ModelError>;
    /// What the model says about itself.
    fn meta(&self) -> &ModelMeta;
    /// The device label, e.g. `cuda:0`.
    fn device_label(&self) -> String;
    /// The CUDA ordinal, when on a GPU.
    fn cuda_index(&self) -> Option<usize>;
}

/// The libtorch version this binary runs with, read from the loaded library's folder.
pub fn torch_version() -> String {
    // The wheel's `torch/version.py` sits next to `lib/`; fall back to the linked version.
    let from_env = std::env::var("LIBTORCH").ok();
    let candidates =
        from_env
            .into_iter()
            .chain([concat!(env!("CARGO_MANIFEST_DIR"), "/.libtorch").to_string()]);
    for dir in candidates {
        if let Ok(s) = std::fs::read_to_string(format!("{dir}/version.py")) {
            if let Some(v) = s
                .lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
            {
                return v;
            }
        }
    }
    "2.11.0 (linked)".to_string()
}

/// Loads a TorchScript file in eval mode onto `device` and reads its `meta()` JSON string.
/// `what` names the file in errors ("model", "detector"); `how_to_get` says how to make one when
/// the path does not exist.
pub(crate) fn load_scripted(
    path: &Path,
    device: Device,
    what: &str,
    how_to_get: &str,
) -> Result<(CModule, String), ModelError> {
    let load_err = |message: String| ModelError::Load {
        path: path.display().to_string(),
        message,
    };
    if !path.exists() {
        return Err(load_err(format!("no such file ({how_to_get})")));
    }
    let mut module =
        CModule::load_on_device(path, device).map_err(|e| load_err(first_line(&e.to_string())))?;
    module.set_eval();
    match module.method_is::<IValue>("meta", &[]) {
        Ok(IValue::String(s)) => Ok((module, s)),
        Ok(other) => Err(ModelError::Contract(format!(
            "{what}: meta() returned {other:?}, expected a JSON string"
        ))),
        Err(e) => Err(ModelError::Contract(format!(
            "{what}: the file has no meta() method: {}",
            first_line(&e.to_string())
        ))),
    }
}

/// What to do about a missing model file, for a worker running in `dir`: `make setup` only
/// inside the source tree (its `Cargo.toml` and `scripts/setup` there), where it works.
fn how_to_get_a_model(dir: &Path) -> &'static str {
    if dir.join("Cargo.toml").is_file() && dir.join("scripts/setup").is_file() {
        "run `make setup` for the tiny model, or `python -m models.export`"
    } else {
        "export one with `python -m models.export` in the source tree, and mount it there"
    }
}

/// `e`, saying which file it is about: its `role` (`model`, `detector`) and the setting that
/// names the file (`key`, and `env` in the environment). Load and contract errors only.
pub fn naming_the_file(e: ModelError, role: &str, key: &str, env: &str) -> ModelError {
    let note = format!("the {role} file: setting {key}, env {env}");
    match e {
        ModelError::Load { path, message } => ModelError::Load {
            path,
            message: format!("{message} ({note})"),
        },
        ModelError::Contract(m) => ModelError::Contract(format!("{m} ({note})")),
        other => other,
    }
}

/// A TorchScript file made by `python -m models.export`, run through libtorch.
pub struct TorchModel {
    module: CModule,
    device: Device,
    meta: ModelMeta,
}

/// Resolves a configured device against what this process can use.
pub fn resolve_device(spec: DeviceSpec) -> Result<Device, ModelError> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Auto => Ok(if tch::Cuda::is_available() {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }),
        DeviceSpec::Cuda(n) => {
            let count = if tch::Cuda::is_available() {
                tch::Cuda::device_count() as usize
            } else {
                0
            };
            if n < count {
                Ok(Device::Cuda(n))
            } else if count == 0 {
                Err(ModelError::Device(
                    format!("cuda:{n}"),
                    "CUDA is not available in this process (no GPU or no driver)".into(),
                ))
            } else {
                Err(ModelError::Device(
                    format!("cuda:{n}"),
                    format!("only {count} CUDA device(s) visible"),
                ))
            }
        }
    }
}

/// `cpu` or `cuda:N`.
pub fn device_label(d: Device) -> String {
    match d {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".into(),
    }
}

impl TorchModel {
    /// Loads a TorchScript file onto `device`, reads and checks its `meta()`.
    pub fn load(path: &Path, device: Device) -> Result<Self, ModelError> {
        if let Device::Cuda(_) = device {
            tch::Cuda::cudnn_set_benchmark(true);
        }
        let (module, raw) =
            load_scripted(path, device, "model", how_to_get_a_model(Path::new(".")))?;
        let meta = ModelMeta::parse(&raw)?;
        Ok(TorchModel {
            module,
            device,
            meta,
        })
    }

    fn run(
        &mut self,
        crops: &[u8],
        n: usize,
        vertices: bool,
    ) -> Result<BatchOutput, tch::TchError> {
        let _guard = tch::no_grad_guard();
        // Only the fallible (`f_`) API on the device path: the others panic on a libtorch
        // error, and an upload that runs out of memory must come back as an error.
        // `forward` answers a wrong length with an error before calling this.
        assert_eq!(crops.len(), n * CROP * CROP * 3, "whole crops only");
        let c = CROP as i64;
        // The batch buffer itself, without a host copy: on the CPU the model reads it in place,
        // on a GPU it is uploaded from it.
        // SAFETY: `crops` holds exactly n × CROP × CROP × 3 bytes (asserted above), contiguous
        // with these strides, and outlives `blob` and every tensor made from it: all of them
        // are dropped before this function returns (outputs are copied to host vectors first).
        let blob = unsafe {
            Tensor::f_from_blob(
                crops.as_ptr(),
                &[n as i64, c, c, 3],
                &[c * c * 3, c * 3, 3, 1],
                Kind::Uint8,
                Device::Cpu,
            )?
        };
        let input = blob.f_to_device(self.device)?;
        let out = self.module.forward_is(&[IValue::Tensor(input)])?;
        let IValue::GenericDict(pairs) = out else {
            return Err(tch::TchError::Kind(format!(
                "forward returned {out:?}, expected Dict[str, Tensor]"
            )));
        };
        let mut o = BatchOutput {
            n,
            ..Default::default()
        };
        for (k, v) in pairs {
            let (IValue::String(key), IValue::Tensor(t)) = (k, v) else {
                continue;
            };
            let slot = match key.as_str() {
                "pred_cam" => &mut o.pred_cam,
                "global_orient" => &mut o.global_orient,
                "body_pose" => &mut o.body_pose,
                "betas" => &mut o.betas,
                "keypoints_3d" => &mut o.keypoints_3d,
                "vertices" if vertices => o.vertices.get_or_insert_with(Vec::new),
                _ => continue,
            };
            // Copy to the host; the device tensor `t` is dropped at the end of this iteration.
            let host = t
                .f_to_device(Device::Cpu)?
                .f_to_kind(Kind::Float)?
                .f_contiguous()?
                .f_view([-1])?;
            *slot = Vec::<f32>::try_from(&host)?;
        }
        let expect = [
            ("pred_cam", o.pred_cam.len(), 3),
            ("global_orient", o.global_orient.len(), 9),
            ("body_pose", o.body_pose.len(), 23 * 9),
            ("betas", o.betas.len(), 10),
            ("keypoints_3d", o.keypoints_3d.len(), NUM_KEYPOINTS * 3),
        ];
        for (name, got, per) in expect {
            if got != n * per {
                return Err(tch::TchError::Kind(format!(
                    "output {name} has {got} values, expected {n} x {per}"
                )));
            }
        }
        Ok(o)
    }
}

impl Model for TorchModel {
    fn forward(
        &mut self,
        crops: &[u8],
        n: usize,
        vertices: bool,
    ) -> Result<BatchOutput, ModelError> {
        if crops.len() != n * CROP * CROP * 3 {
            return Err(ModelError::Forward(format!(
                "{} bytes for {n} crops of {CROP}x{CROP}",
                crops.len()
            )));
        }
        self.run(crops, n, vertices).map_err(torch_error)
    }

    fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    fn device_label(&self) -> String {
        device_label(self.device)
    }

    fn cuda_index(&self) -> Option<usize> {
        match self.device {
            Device::Cuda(n) => Some(n),
            _ => None,
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// A libtorch error as a [`ModelError`]: out of memory as such (the OOM ladder halves the
/// batch), anything else as a forward error that names its cause. TorchScript puts its own
/// line first and the exception's (`RuntimeError: ...`) last: that one is kept.
pub(crate) fn torch_error(e: tch::TchError) -> ModelError {
    let message = e.to_string();
    if crate::error::is_oom_message(&message) {
        return ModelError::from_torch(message);
    }
    let interpreter = message.contains("failed in the TorchScript interpreter");
    match message
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.contains("Error: "))
    {
        Some(cause) if interpreter => ModelError::Forward(cause.chars().take(300).collect()),
        _ => ModelError::from_torch(message),
    }
}

/// One frame of a [`BatchOutput`]: a view into the batch's host buffers (shared by every frame
/// of the batch), so splitting a batch per person copies nothing; the result is built straight
/// from these slices.
#[derive(Debug, Clone)]
pub struct FrameOutput {
    batch: std::sync::Arc<BatchOutput>,
    i: usize,
}

impl FrameOutput {
    fn rows(v: &[f32], i: usize, per: usize) -> &[f32] {
        &v[i * per..(i + 1) * per]
    }

    /// Weak-perspective camera (s, tx, ty) of the crop.
    pub fn pred_cam(&self) -> [f32; 3] {
        let c = Self::rows(&self.batch.pred_cam, self.i, 3);
        [c[0], c[1], c[2]]
    }

    /// Root rotation matrix, row-major (9 values).
    pub fn global_orient(&self) -> &[f32] {
        Self::rows(&self.batch.global_orient, self.i, 9)
    }

    /// 23 joint rotation matrices, row-major (23 × 9 values).
    pub fn body_pose(&self) -> &[f32] {
        Self::rows(&self.batch.body_pose, self.i, 23 * 9)
    }

    /// Shape coefficients (10 values).
    pub fn betas(&self) -> &[f32] {
        Self::rows(&self.batch.betas, self.i, 10)
    }

    /// 3D keypoints, metres (44 × 3 values).
    pub fn keypoints_3d(&self) -> &[f32] {
        Self::rows(&self.batch.keypoints_3d, self.i, NUM_KEYPOINTS * 3)
    }

    /// Vertices (6890 × 3 values), when the batch computed them for every frame.
    pub fn vertices(&self) -> Option<&[f32]> {
        let b = &self.batch;
        b.vertices
            .as_deref()
            .filter(|v| v.len() == b.n * NUM_VERTICES * 3)
            .map(|v| Self::rows(v, self.i, NUM_VERTICES * 3))
    }

    /// A frame whose camera is `pred_cam` and every other output zero (tests and stand-ins).
    #[doc(hidden)]
    pub fn stand_in(pred_cam: [f32; 3]) -> Self {
        let mut b = BatchOutput::zeros(1);
        b.pred_cam = pred_cam.to_vec();
        b.into_frames().pop().expect("one frame")
    }
}

impl BatchOutput {
    /// A batch of `n` frames with every output zero and no vertices.
    pub fn zeros(n: usize) -> Self {
        BatchOutput {
            n,
            pred_cam: vec![0.0; n * 3],
            global_orient: vec![0.0; n * 9],
            body_pose: vec![0.0; n * 23 * 9],
            betas: vec![0.0; n * 10],
            keypoints_3d: vec![0.0; n * NUM_KEYPOINTS * 3],
            vertices: None,
        }
    }

    /// The batch split per frame, without copying: every frame views the shared batch.
    /// The shapes were checked when the batch was made ([`TorchModel`] checks them; a model
    /// stand-in must give `n` rows of every output).
    pub fn into_frames(self) -> Vec<FrameOutput> {
        let n = self.n;
        let batch = std::sync::Arc::new(self);
        (0..n)
            .map(|i| FrameOutput {
                batch: batch.clone(),
                i,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::CROP_BYTES;

    const GOOD: &str = r#"{"name":"hmr2","preset":"tiny","dtype":"bf16","input_size":[256,256],
        "outputs":{"pred_cam":[],"global_orient":[],"body_pose":[],"betas":[],"keypoints_3d":[]}}"#;

    #[test]
    fn a_matching_meta_is_accepted_and_labelled() {
        let m = ModelMeta::parse(GOOD).unwrap();
        assert_eq!(m.label(), "hmr2 tiny bf16");
    }

    #[test]
    fn mismatches_are_clear_start_up_errors() {
        let wrong_size = GOOD.replace("[256,256]", "[256,192]");
        let e = ModelMeta::parse(&wrong_size).unwrap_err().to_string();
        assert!(e.contains("[256, 192]") && e.contains("crops"), "{e}");
        let no_kp = GOOD.replace(r#","keypoints_3d":[]"#, "");
        let e = ModelMeta::parse(&no_kp).unwrap_err().to_string();
        assert!(e.contains("no `keypoints_3d` output"), "{e}");
        let e = ModelMeta::parse("not json").unwrap_err().to_string();
        assert!(e.contains("meta() is not the expected JSON"), "{e}");
    }

    #[test]
    fn a_missing_model_file_says_how_to_get_one() {
        let e = TorchModel::load(Path::new("/no/such/model.pt"), Device::Cpu)
            .err()
            .expect("no file")
            .to_string();
        assert!(e.contains("make setup"), "{e}");
    }

    #[test]
    fn make_setup_is_suggested_only_inside_the_source_tree() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!how_to_get_a_model(dir.path()).contains("make setup"));
        std::fs::write(dir.path().join("Cargo.toml"), "").unwrap();
        assert!(
            !how_to_get_a_model(dir.path()).contains("make setup"),
            "a Cargo.toml alone is not this source tree"
        );
        std::fs::create_dir(dir.path().join("scripts")).unwrap();
        std::fs::write(dir.path().join("scripts/setup"), "").unwrap();
        assert!(how_to_get_a_model(dir.path()).contains("make setup"));
    }

    #[test]
    fn load_errors_name_the_file_and_its_setting() {
        let dir = tempfile::tempdir().unwrap();
        let corrupt = dir.path().join("corrupt.pt");
        std::fs::write(&corrupt, b"not a TorchScript archive").unwrap();
        let e = TorchModel::load(&corrupt, Device::Cpu)
            .err()
            .expect("corrupt");
        let e = naming_the_file(e, "model", "model.path", "HMR2_MODEL__PATH").to_string();
        assert!(e.contains("corrupt.pt"), "{e}");
        assert!(
            e.contains("the model file: setting model.path, env HMR2_MODEL__PATH"),
            "{e}"
        );
    }

    /// A test model exported by `make setup`.
    fn artifact(name: &str) -> std::path::PathBuf {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/artifacts")
            .join(name);
        assert!(p.exists(), "{} is missing: run `make setup`", p.display());
        p
    }

    /// `n` black crops, the first one filled with `first`.
    fn crops(n: usize, first: u8) -> Vec<u8> {
        let mut c = vec![0u8; n * CROP_BYTES];
        c[..CROP_BYTES].fill(first);
        c
    }

    #[test]
    fn a_failing_model_or_device_is_an_error_never_a_panic() {
        // models/faulty_model.py: the tiny model, failing on crops of one marker value.
        let mut m = TorchModel::load(&artifact("faulty-test.pt"), Device::Cpu).unwrap();
        let out = m.forward(&crops(2, 0), 2, true).unwrap();
        assert_eq!(out.pred_cam.len(), 6);
        for (marker, says) in [
            (255, "illegal memory access"),
            (254, "output pred_cam has 4 values, expected 2 x 3"),
            (253, "meta"),
        ] {
            let e = m.forward(&crops(2, marker), 2, false).unwrap_err();
            assert!(
                matches!(&e, ModelError::Forward(m) if m.contains(says)),
                "{marker}: {e}"
            );
        }
        let e = m.forward(&crops(1, 0), 2, false).unwrap_err();
        assert!(e.to_string().contains("bytes for 2 crops"), "{e}");
        assert_eq!(
            m.forward(&crops(1, 0), 1, false).unwrap().n,
            1,
            "still usable"
        );
    }

    #[test]
    fn out_of_memory_is_recognised_as_such() {
        // models/oom_model.py: out of memory above 2 crops.
        let mut m = TorchModel::load(&artifact("oom-test.pt"), Device::Cpu).unwrap();
        let e = m.forward(&crops(3, 0), 3, false).unwrap_err();
        assert!(
            matches!(&e, ModelError::OutOfMemory(m) if m.contains("Tried to allocate")),
            "{e}"
        );
        assert_eq!(m.forward(&crops(2, 0), 2, false).unwrap().n, 2);
    }

    #[test]
    fn frames_are_sliced_out_of_a_batch() {
        let n = 2;
        let o = BatchOutput {
            n,
            pred_cam: (0..6).map(|v| v as f32).collect(),
            global_orient: vec![0.0; 18],
            body_pose: vec![1.0; 2 * 23 * 9],
            betas: vec![2.0; 20],
            keypoints_3d: vec![3.0; 2 * 44 * 3],
            vertices: None,
        };
        let f = o.into_frames().pop().unwrap();
        assert_eq!(f.pred_cam(), [3.0, 4.0, 5.0]);
        assert_eq!(f.body_pose().len(), 23 * 9);
        assert_eq!(f.keypoints_3d().len(), 44 * 3);
        assert!(f.vertices().is_none());
    }
}
