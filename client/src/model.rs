//! The model hash `{prefix}:model` ([`crate::Keys::model`]): what the workers publish about
//! the model they run, for renderers and readers of the results.
//!
//! At start-up every worker replaces the hash with its fields, each a JSON text: `meta` (the
//! model file's `meta()`), `detector` (the person detector's `meta()`, when one is configured)
//! and, from the `<model>.mesh.json` file the exporter writes beside the model, `faces`,
//! `parents`, `joint_names`, `keypoint_names` and `topology` (without that file the hash holds
//! `meta` and `detector` only). [`ModelInfo::from_hash`] reads the fields of `HGETALL`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

/// The hash `{prefix}:model`, each field read from its JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "Model information")
)]
pub struct ModelInfo {
    /// The model file's own description (its `meta()`).
    #[cfg_attr(feature = "schema", schemars(title = "Model meta"))]
    pub meta: ModelMeta,
    /// The person detector's description (its `meta()`); only when the workers run one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Detector meta"))]
    pub detector: Option<DetectorMeta>,
    /// The mesh's triangles: rows `[i, j, k]` of 0-based indices into a person's `vertices`
    /// (13776 rows for SMPL's 6890 vertices). Only when the mesh file is beside the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Mesh faces"))]
    pub faces: Option<Vec<[u32; 3]>>,
    /// The kinematic tree: the parent of each of the 24 SMPL joints (root, then the 23 of
    /// `body_pose`), `-1` for the root. Only when the mesh file is beside the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Joint parents"))]
    pub parents: Option<Vec<i32>>,
    /// The names of the 24 SMPL joints, in `parents` order. Only when the mesh file is beside
    /// the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Joint names"))]
    pub joint_names: Option<Vec<String>>,
    /// The names of the 44 keypoints, in the order of a person's `keypoints_3d` and
    /// `keypoints_2d`. Only when the mesh file is beside the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Keypoint names"))]
    pub keypoint_names: Option<Vec<String>>,
    /// Whose triangulation `faces` is: `smpl` (the licensed SMPL file's), or `synthetic` (the
    /// stand-in of the test models, not a body). Only when the mesh file is beside the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Topology"))]
    pub topology: Option<String>,
}

/// What a model file says about itself (`meta()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "Model meta")
)]
pub struct ModelMeta {
    /// The model's name (`hmr2`).
    #[cfg_attr(feature = "schema", schemars(title = "Name"))]
    pub name: String,
    /// The architecture preset (`full`, or `tiny` for the test model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Preset"))]
    pub preset: Option<String>,
    /// The exporter's version; it changes when the file's interface changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Version"))]
    pub version: Option<String>,
    /// The precision the model computes in (`fp32`, `fp16`, `bf16`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Precision"))]
    pub dtype: Option<String>,
    /// The size of the square crops the model takes, pixels: `[256, 256]`.
    #[cfg_attr(feature = "schema", schemars(title = "Input size"))]
    pub input_size: [u32; 2],
    /// How the crops are laid out (`uint8 BHWC RGB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Input format"))]
    pub input_format: Option<String>,
    /// The model's outputs by name, each with its shape (`"B"` for the batch):
    /// `{"body_pose": ["B", 23, 3, 3], ...}`.
    #[cfg_attr(feature = "schema", schemars(title = "Outputs"))]
    pub outputs: BTreeMap<String, Vec<Dim>>,
    /// The SMPL model inside: `synthetic`, or the SMPL file's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "SMPL"))]
    pub smpl: Option<String>,
    /// Where the weights came from: a checkpoint's file name, or `random seed N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Weights"))]
    pub weights: Option<String>,
    /// How many parameters the backbone and head have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Parameters"))]
    pub params: Option<u64>,
    /// Any other key the exporter wrote.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One dimension of an output's shape: a size, or the name of a size that varies (`"B"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "Dimension")
)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Size(u64),
    /// A size that varies, by name (`"B"`: the batch).
    Named(String),
}

/// What a person detector file says about itself (`meta()`, contract `person-detector/1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "Detector meta")
)]
pub struct DetectorMeta {
    /// The detector contract the file meets: `person-detector/1`.
    #[cfg_attr(
        feature = "schema",
        schemars(title = "Contract", extend("const" = "person-detector/1"))
    )]
    pub contract: String,
    /// The detector's name.
    #[cfg_attr(feature = "schema", schemars(title = "Name"))]
    pub name: String,
    /// Side `S` of the square, letterboxed input, pixels (32 to 4096).
    #[cfg_attr(
        feature = "schema",
        schemars(title = "Input size", range(min = 32, max = 4096))
    )]
    pub input_size: u32,
    /// The precision the detector computes in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(title = "Precision"))]
    pub dtype: Option<String>,
    /// Any other key the exporter wrote (`max_det`, `iou_threshold`, `classes`, ...).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A model hash that cannot be read.
#[derive(Debug, Error)]
pub enum ModelInfoError {
    /// No `meta` field: no worker has started on this queue (or the hash is not a model hash).
    #[error("the model hash has no `meta` field: no worker has published its model yet")]
    NoMeta,
    /// A field is not the JSON it should be.
    #[error("the model hash field `{field}` is not the expected JSON: {source}")]
    Field {
        /// The hash field.
        field: String,
        /// What is wrong with it.
        source: serde_json::Error,
    },
}

impl ModelInfo {
    /// Reads the fields of the hash (as `HGETALL` returns them: field, JSON text). Fields this
    /// version does not know are skipped.
    pub fn from_hash<K, V>(fields: impl IntoIterator<Item = (K, V)>) -> Result<Self, ModelInfoError>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        fn parse<T: serde::de::DeserializeOwned>(
            field: &str,
            text: &[u8],
        ) -> Result<T, ModelInfoError> {
            serde_json::from_slice(text).map_err(|source| ModelInfoError::Field {
                field: field.to_string(),
                source,
            })
        }
        let mut meta = None;
        let mut info = ModelInfo {
            meta: ModelMeta {
                name: String::new(),
                preset: None,
                version: None,
                dtype: None,
                input_size: [0, 0],
                input_format: None,
                outputs: BTreeMap::new(),
                smpl: None,
                weights: None,
                params: None,
                other: Map::new(),
            },
            detector: None,
            faces: None,
            parents: None,
            joint_names: None,
            keypoint_names: None,
            topology: None,
        };
        for (field, text) in fields {
            let text = text.as_ref();
            match field.as_ref() {
                b"meta" => meta = Some(parse("meta", text)?),
                b"detector" => info.detector = Some(parse("detector", text)?),
                b"faces" => info.faces = Some(parse("faces", text)?),
                b"parents" => info.parents = Some(parse("parents", text)?),
                b"joint_names" => info.joint_names = Some(parse("joint_names", text)?),
                b"keypoint_names" => info.keypoint_names = Some(parse("keypoint_names", text)?),
                b"topology" => info.topology = Some(parse("topology", text)?),
                _ => {}
            }
        }
        info.meta = meta.ok_or(ModelInfoError::NoMeta)?;
        Ok(info)
    }

    /// The hash fields of this information, as a worker writes them (field, JSON text).
    pub fn to_hash(&self) -> Vec<(&'static str, String)> {
        fn json<T: Serialize>(v: &T) -> String {
            serde_json::to_string(v).expect("model information always serialises")
        }
        let mut fields = vec![("meta", json(&self.meta))];
        let optional = [
            ("detector", self.detector.as_ref().map(json)),
            ("faces", self.faces.as_ref().map(json)),
            ("parents", self.parents.as_ref().map(json)),
            ("joint_names", self.joint_names.as_ref().map(json)),
            ("keypoint_names", self.keypoint_names.as_ref().map(json)),
            ("topology", self.topology.as_ref().map(json)),
        ];
        fields.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiny test model's `meta()`, as `models/README.md` shows it.
    const META: &str = r#"{"name": "hmr2", "preset": "tiny", "version": "0.1.0", "dtype": "fp32", "input_size": [256, 256],
 "input_format": "uint8 BHWC RGB",
 "outputs": {"pred_cam": ["B", 3], "global_orient": ["B", 1, 3, 3], "body_pose": ["B", 23, 3, 3],
             "betas": ["B", 10], "keypoints_3d": ["B", 44, 3], "vertices": ["B", 6890, 3]},
 "smpl": "synthetic", "weights": "random seed 0", "params": 271773}"#;

    #[test]
    fn a_meta_only_hash_reads_and_keeps_unknown_meta_keys() {
        let meta = META.replace("\"params\"", "\"test_only\": true, \"params\"");
        let info = ModelInfo::from_hash([("meta", meta.as_str()), ("later", "not json")]).unwrap();
        assert_eq!(info.meta.name, "hmr2");
        assert_eq!(info.meta.input_size, [256, 256]);
        assert_eq!(
            info.meta.outputs["body_pose"],
            vec![
                Dim::Named("B".into()),
                Dim::Size(23),
                Dim::Size(3),
                Dim::Size(3)
            ]
        );
        assert_eq!(info.meta.params, Some(271773));
        assert_eq!(info.meta.other["test_only"], Value::Bool(true));
        assert_eq!((info.detector.as_ref(), info.faces.as_ref()), (None, None));
        // Written back, the same fields (the unknown one is not kept).
        let hash = info.to_hash();
        assert_eq!(hash.len(), 1);
        let again: Value = serde_json::from_str(&hash[0].1).unwrap();
        assert_eq!(again, serde_json::from_str::<Value>(&meta).unwrap());
    }

    #[test]
    fn a_full_hash_reads_every_field() {
        let detector = r#"{"contract":"person-detector/1","name":"detector-tiny","input_size":320,"dtype":"float32","max_det":32}"#;
        let fields = [
            ("meta", META.to_string()),
            ("detector", detector.to_string()),
            ("faces", "[[0,1,2],[2,1,3]]".to_string()),
            ("parents", "[-1,0,0]".to_string()),
            (
                "joint_names",
                r#"["pelvis","left_hip","right_hip"]"#.to_string(),
            ),
            ("keypoint_names", r#"["nose","neck"]"#.to_string()),
            ("topology", r#""synthetic""#.to_string()),
        ];
        let info = ModelInfo::from_hash(fields.clone()).unwrap();
        let d = info.detector.as_ref().unwrap();
        assert_eq!(
            (d.contract.as_str(), d.input_size),
            ("person-detector/1", 320)
        );
        assert_eq!(d.other["max_det"], 32);
        assert_eq!(info.faces.as_deref(), Some(&[[0, 1, 2], [2, 1, 3]][..]));
        assert_eq!(info.parents.as_deref(), Some(&[-1, 0, 0][..]));
        assert_eq!(info.topology.as_deref(), Some("synthetic"));
        assert_eq!(info.keypoint_names.as_ref().map(Vec::len), Some(2));
        let back = ModelInfo::from_hash(info.to_hash()).unwrap();
        assert_eq!(back, info);
    }

    #[test]
    fn a_hash_without_meta_or_with_a_bad_field_is_refused_by_name() {
        let e = ModelInfo::from_hash(Vec::<(String, String)>::new()).unwrap_err();
        assert!(matches!(e, ModelInfoError::NoMeta), "{e}");
        let e = ModelInfo::from_hash([("meta", META), ("faces", "[[0,1]]")]).unwrap_err();
        assert!(e.to_string().contains("`faces`"), "{e}");
        let e = ModelInfo::from_hash([("meta", "{\"name\":\"x\"}")]).unwrap_err();
        assert!(e.to_string().contains("`meta`"), "{e}");
    }
}
