//! Compiles src/bpf/<name>.bpf.c with clang (CO-RE, against the committed
//! vmlinux.h) and generates a libbpf-rs skeleton for each into OUT_DIR.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SKELETONS: [&str; 2] = ["probes", "availability"];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=src/bpf/vmlinux.h");
    println!("cargo:rerun-if-changed=src/bpf/probes.bpf.h");
    for name in SKELETONS {
        let source = format!("src/bpf/{name}.bpf.c");
        println!("cargo:rerun-if-changed={source}");
        SkeletonBuilder::new()
            .source(&source)
            // v3: atomic fetch-and-add that returns the old value (slot allocation).
            .clang_args(["-mcpu=v3", "-Wall", "-Wno-unused-function", "-Isrc/bpf"])
            .build_and_generate(out_dir.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building BPF skeleton {source}: {e:#}"));
    }
}
