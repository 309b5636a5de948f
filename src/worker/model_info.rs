//! The model hash `{prefix}:model` (DESIGN §3): what producers and readers learn about the
//! model this fleet runs, published once at start-up.

use super::ctx::Ctx;
use super::infer::Loaded;
use crate::config::Config;

/// The hash's fields: `meta` (and `detector`), plus the mesh topology the exporter wrote
/// beside the model file (`<model>.mesh.json`), when it is there.
fn fields(config: &Config, loaded: &Loaded) -> Vec<(&'static str, String)> {
    let mut fields = vec![("meta", loaded.meta.raw.clone())];
    if let Some(d) = &loaded.detector {
        fields.push(("detector", d.raw.clone()));
    }
    let mesh = config.model.path.with_extension("mesh.json");
    let parsed = std::fs::read(&mesh)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string()));
    match parsed {
        Ok(v) => {
            for key in [
                "faces",
                "parents",
                "joint_names",
                "keypoint_names",
                "topology",
            ] {
                if let Some(x) = v.get(key) {
                    fields.push((key, x.to_string()));
                }
            }
        }
        Err(e) => tracing::warn!(
            file = %mesh.display(),
            error = %e,
            "no mesh topology beside the model; the model hash holds its meta only"
        ),
    }
    fields
}

/// Publishes the model hash once; a failure is logged, not fatal.
pub(crate) async fn publish(ctx: &Ctx, loaded: &Loaded) {
    let fields = fields(&ctx.config, loaded);
    match ctx.queue.publish_model_info(&fields).await {
        Ok(()) => tracing::info!(
            key = %ctx.queue.shard(0).keys().model,
            fields = fields.len(),
            "model information published"
        ),
        Err(e) => tracing::warn!(error = %e, "could not publish the model information"),
    }
}
