//! The SMPL layer the exporter writes beside the model (`<model>.smpl.pt`, TorchScript, CPU,
//! fp32; contract `smpl-layer/1`): vertices from the smoothed parameters of a tracked video.

use std::path::{Path, PathBuf};

use tch::{CModule, Device, IValue, Kind, Tensor};

use crate::error::ModelError;

/// People per forward pass of the layer.
const CHUNK: usize = 64;

/// `<model>.smpl.pt` for the model file `model` (`x/hmr2-tiny.pt` → `x/hmr2-tiny.smpl.pt`).
pub(crate) fn smpl_path(model: &Path) -> PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    model.with_file_name(format!("{stem}.smpl.pt"))
}

/// The loaded layer (CPU).
pub struct SmplLayer {
    module: CModule,
}

/// One person's parameters: `global_orient` and 23 `body_pose` rotations (3×3), 10 `betas`.
pub(crate) struct Params<'a> {
    pub global_orient: [[f32; 3]; 3],
    pub body_pose: &'a [[[f32; 3]; 3]],
    pub betas: &'a [f32],
}

impl SmplLayer {
    /// Loads the layer from `path` onto the CPU.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let module = CModule::load_on_device(path, Device::Cpu).map_err(|e| ModelError::Load {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(SmplLayer { module })
    }

    /// Vertices `[6890 × [x, y, z]]` of each person, in chunks of [`CHUNK`].
    pub(crate) fn vertices(&self, people: &[Params<'_>]) -> Result<Vec<Vec<[f32; 3]>>, ModelError> {
        let _guard = tch::no_grad_guard();
        let mut out = Vec::with_capacity(people.len());
        for chunk in people.chunks(CHUNK) {
            let b = chunk.len() as i64;
            let mut go: Vec<f32> = Vec::with_capacity(chunk.len() * 9);
            let mut bp: Vec<f32> = Vec::with_capacity(chunk.len() * 23 * 9);
            let mut betas: Vec<f32> = Vec::with_capacity(chunk.len() * 10);
            for p in chunk {
                go.extend(p.global_orient.iter().flatten());
                bp.extend(p.body_pose.iter().flatten().flatten());
                betas.extend_from_slice(p.betas);
            }
            let go = Tensor::from_slice(&go).view([b, 1, 3, 3]);
            let bp = Tensor::from_slice(&bp).view([b, 23, 3, 3]);
            let betas = Tensor::from_slice(&betas).view([b, 10]);
            let forward = |e: tch::TchError| ModelError::Forward(format!("SMPL layer: {e}"));
            let v = match self
                .module
                .forward_is(&[
                    IValue::Tensor(betas),
                    IValue::Tensor(go),
                    IValue::Tensor(bp),
                ])
                .map_err(forward)?
            {
                IValue::Tensor(t) => t,
                IValue::Tuple(mut items) if !items.is_empty() => match items.swap_remove(0) {
                    IValue::Tensor(t) => t,
                    other => {
                        return Err(ModelError::Forward(format!(
                            "SMPL layer returned {other:?}"
                        )))
                    }
                },
                other => {
                    return Err(ModelError::Forward(format!(
                        "SMPL layer returned {other:?}"
                    )))
                }
            };
            let v = v.to_kind(Kind::Float).contiguous();
            if v.size() != [b, 6890, 3] {
                return Err(ModelError::Forward(format!(
                    "SMPL layer returned vertices of shape {:?}, not [{b}, 6890, 3]",
                    v.size()
                )));
            }
            let flat = Vec::<f32>::try_from(v.view([-1])).map_err(forward)?;
            out.extend(
                flat.chunks_exact(6890 * 3)
                    .map(|p| p.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect()),
            );
        }
        Ok(out)
    }
}
