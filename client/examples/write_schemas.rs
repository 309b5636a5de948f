//! Writes the wire contract's JSON Schemas into `schemas/` at the repository root (or into the
//! folder given as the only argument), from the types of `hmr2-client`:
//!
//! ```text
//! cargo run -p hmr2-client --features schema --example write_schemas
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use hmr2_client::schema::{to_file_text, FILES};

fn main() -> ExitCode {
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas"),
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for file in FILES {
        let path = dir.join(file.file);
        let text = to_file_text(&(file.generate)());
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("{}: {}", path.display(), file.describes);
    }
    ExitCode::SUCCESS
}
