//! `hmr2-worker check`: what this machine and configuration can do, in one screen.

use std::fmt::Write as _;

use crate::config::Config;
use crate::detector::{self, Detector, TorchDetector};
use crate::gpu;
use crate::model::{self, Model, TorchModel};

/// Prints versions, device and memory figures; fails (the command exits non-zero) when the
/// configured device, the model or a configured detector cannot be used, missing files
/// included.
pub fn run(config: &Config) -> anyhow::Result<()> {
    let mut out = String::new();
    let cuda = tch::Cuda::is_available();
    let count = if cuda { tch::Cuda::device_count() } else { 0 };
    let _ = writeln!(out, "hmr2-worker   {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "libtorch      {}", model::torch_version());
    let _ = writeln!(out, "cuda          {}", yes_no(cuda));
    let _ = writeln!(
        out,
        "cudnn         {}",
        yes_no(tch::Cuda::cudnn_is_available())
    );
    let _ = writeln!(out, "cuda devices  {count}");
    let _ = writeln!(out, "configured    {}", config.model.device);
    print!("{out}");
    let device = model::resolve_device(config.device())?;
    println!("device        {}", model::device_label(device));
    if let tch::Device::Cuda(n) = device {
        print_gpu_memory(n);
    }
    if config.model.path.exists() {
        let mut m = TorchModel::load(&config.model.path, device)
            .map_err(|e| model::naming_the_file(e, "model", "model.path", "HMR2_MODEL__PATH"))?;
        println!(
            "model         {} ({})",
            config.model.path.display(),
            m.meta().label()
        );
        println!("model meta    {}", m.meta().raw);
        let crops = vec![0u8; crate::image::CROP * crate::image::CROP * 3];
        m.forward(&crops, 1, false)?;
        println!("forward       ok (1 frame)");
        if let tch::Device::Cuda(n) = device {
            print_gpu_memory(n);
        }
    } else {
        println!("model         {} not found", config.model.path.display());
        anyhow::bail!(
            "the model file {} does not exist (setting model.path, env HMR2_MODEL__PATH)",
            config.model.path.display()
        );
    }
    let path = &config.detector.path;
    if path.as_os_str().is_empty() {
        println!("detector      none (jobs without boxes get one whole-frame person)");
        println!(
            "warning       without a detector, frames without boxes get a near-mean pose: set \
             detector.path (env HMR2_DETECTOR__PATH) to a file of python -m models.export_detector"
        );
    } else if !path.exists() {
        println!("detector      {} not found", path.display());
        anyhow::bail!(
            "the detector file {} does not exist (setting detector.path, env HMR2_DETECTOR__PATH)",
            path.display()
        );
    } else {
        let mut d = TorchDetector::load(path, device).map_err(|e| {
            model::naming_the_file(e, "detector", "detector.path", "HMR2_DETECTOR__PATH")
        })?;
        let meta = d.meta().clone();
        println!(
            "detector      {} ({}, input {}x{}, on {})",
            path.display(),
            meta.name,
            meta.input_size,
            meta.input_size,
            model::device_label(device)
        );
        let (threshold, source) = detector::score_threshold(&config.detector, &meta);
        println!(
            "thresholds    score >= {threshold} ({}), NMS IoU {}",
            source.describe(),
            meta.iou_threshold.map_or_else(
                || "none (the file needs no NMS, or does not say)".to_string(),
                |iou| format!("{iou} (applied inside the file)")
            )
        );
        if let Some(license) = &meta.license {
            println!("licence       {license}");
        }
        if meta.synthetic_only {
            println!(
                "warning       this detector finds only the demo's synthetic figures, not people in \
                 real footage: export a real one (python -m models.export_detector, models/README.md)"
            );
        }
        let s = meta.input_size as usize;
        let found = d.detect(&vec![114u8; s * s * 3], 1)?;
        println!(
            "detect        ok (1 frame, {} detections on a grey frame)",
            found[0].len()
        );
    }
    Ok(())
}

fn print_gpu_memory(n: usize) {
    match crate::gpu::nvml_summary(n) {
        Ok(line) => println!("nvml          {line}"),
        Err(e) => println!("nvml          {e}"),
    }
    match gpu::memory_info(n) {
        Ok(m) => println!(
            "memory        {:.2} GiB free of {:.2} GiB",
            gib(m.free as f64),
            gib(m.total as f64)
        ),
        Err(e) => println!("memory        unavailable: {e}"),
    }
    match gpu::stats(n) {
        Ok(s) => println!(
            "allocator     allocated {:.1} MiB, reserved {:.1} MiB, peak {:.1} MiB",
            mib(s.allocated as f64),
            mib(s.reserved as f64),
            mib(s.peak_allocated as f64)
        ),
        Err(e) => println!("allocator     unavailable: {e}"),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "available"
    } else {
        "not available"
    }
}

fn gib(b: f64) -> f64 {
    b / (1u64 << 30) as f64
}

fn mib(b: f64) -> f64 {
    b / (1u64 << 20) as f64
}
