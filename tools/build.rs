//! Gives the tool's binary and tests what the worker's build script gives the worker's: an rpath
//! to the libtorch `lib` folder (so `hmr2` runs without `LD_LIBRARY_PATH` on the machine it was
//! built on), and `libtorch_cuda.so` linked with `--no-as-needed` when it exists, so `hmr2 bench`
//! and `hmr2 demo` can use CUDA. (A build script's link arguments apply only to its own package,
//! so the worker's cannot do this for the tool.)
use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let libtorch = match env::var_os("LIBTORCH") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.libtorch"),
    };
    let lib = libtorch.join("lib");
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let cuda = lib.join("libtorch_cuda.so");
    if cuda.exists() {
        println!(
            "cargo:rustc-link-arg=-Wl,--no-as-needed,{},--as-needed",
            cuda.display()
        );
    }
}
