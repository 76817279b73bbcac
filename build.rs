//! `ZGP_GIT_COMMIT` for `--version` and `zgp_build_info` (the protobuf code is generated in
//! tools/, the only package that speaks the demo's protocol).

fn main() {
    git_commit();
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
