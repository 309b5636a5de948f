//! Links libtorch for tch, makes CUDA actually load at run time, and compiles the allocator shim.
//!
//! - embeds the libtorch `lib` folder as an rpath, so the binary runs without `LD_LIBRARY_PATH`
//!   on the machine it was built on (elsewhere, set `LD_LIBRARY_PATH` to that machine's torch/lib);
//! - links `libtorch_cuda.so` with `--no-as-needed` when it exists: nothing in the binary refers
//!   to its symbols directly, so the linker would otherwise drop it and CUDA would silently be
//!   unavailable (the binary still starts on a machine without a GPU);
//! - compiles `src/gpu/shim.cpp` with the flags torch-sys uses.
use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=src/gpu/shim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let libtorch = libtorch_dir();
    let lib = libtorch.join("lib");
    // Resolve the link so the rpath survives a different checkout path.
    let lib = lib.canonicalize().unwrap_or(lib);

    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let cuda = lib.join("libtorch_cuda.so");
    if cuda.exists() {
        println!(
            "cargo:rustc-link-arg=-Wl,--no-as-needed,{},--as-needed",
            cuda.display()
        );
    }

    let include = libtorch.join("include");
    cc::Build::new()
        .cpp(true)
        .file("src/gpu/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false)
        .compile("hmr2_gpu_shim");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
}

fn libtorch_dir() -> PathBuf {
    match env::var_os("LIBTORCH") {
        Some(p) => PathBuf::from(p),
        None => {
            let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".libtorch");
            if local.exists() {
                local
            } else {
                panic!("LIBTORCH is not set and .libtorch is missing: run `make setup` first")
            }
        }
    }
}
