//! Generates the protobuf and tonic code for `proto/` with protox (a pure-Rust protobuf
//! compiler), so building the crate never needs `protoc` on the machine. The encoded
//! descriptor set is kept in OUT_DIR for the gRPC reflection service.

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    git_commit();
    let fds = protox::compile(["messages.proto"], ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("messages_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}

/// `ZGP_GIT_COMMIT`: the commit built from (`+dirty` with uncommitted changes), or
/// `unknown` outside a git checkout (a source package). `--version` and `zgp_build_info`
/// show it.
fn git_commit() {
    for path in [".git/HEAD", ".git/index", ".git/refs"] {
        println!("cargo:rerun-if-changed={path}");
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!("{commit}{}", if dirty { "+dirty" } else { "" })
        }
        None => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=ZGP_GIT_COMMIT={commit}");
}
