//! The man pages and shell completions the Debian package ships: the generator
//! (`examples/gen_assets.rs`, included here) writes them into a scratch directory, and
//! every binary's Command — every long flag and every environment variable — must be in
//! its page and its completions. The binaries are read from Cargo.toml, so a new binary
//! without a Command, or a package that installs one under another name than the pages
//! are written for, fails here rather than in the field.

#[allow(dead_code)] // its `main` is the example's, not ours
#[path = "../examples/gen_assets.rs"]
mod gen_assets;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use zmq_grpc_proxy_tools::args::{commands, installed_name};

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// How each shell's completion script spells a long flag.
fn spelled(shell: &str, long: &str) -> String {
    match shell {
        "fish" => format!("-l {long}"),
        _ => format!("--{long}"),
    }
}

#[test]
fn every_binary_gets_a_man_page_and_completions_naming_all_its_flags() {
    let out = scratch("assets");
    let written = gen_assets::generate(&out).expect("generate");
    let commands = commands();
    assert!(!commands.is_empty());
    for command in &commands {
        let name = installed_name(command.get_name());
        let page = read(&out.join("man").join(format!("{name}.1")));
        assert!(
            page.starts_with(".") && page.contains(".TH "),
            "{name}.1 is not roff:\n{page}"
        );
        assert!(
            page.contains(".SH NAME") && page.contains(".SH OPTIONS"),
            "{name}.1:\n{page}"
        );
        // roff spells `-` in running text as `\-`.
        let escaped_name = name.replace('-', "\\-");
        assert!(
            page.contains(&format!("{escaped_name} \\- ")),
            "{name}.1 names itself:\n{page}"
        );
        let completions: Vec<(&str, String)> = gen_assets::SHELLS
            .iter()
            .map(|(shell, dir)| {
                let file = match dir {
                    &"bash" => name.to_owned(),
                    _ => clap_complete::Generator::file_name(shell, name),
                };
                (*dir, read(&out.join("completions").join(dir).join(file)))
            })
            .collect();
        let mut longs = 0;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            longs += 1;
            let in_roff = format!("\\-\\-{}", long.replace('-', "\\-"));
            assert!(page.contains(&in_roff), "{name}.1 lacks --{long}");
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                assert!(
                    page.contains(env.as_ref()),
                    "{name}.1 lacks {env} (--{long})"
                );
            }
            for (shell, script) in &completions {
                assert!(
                    script.contains(&spelled(shell, long)),
                    "the {shell} completion of {name} lacks --{long}"
                );
            }
        }
        assert!(
            longs >= 3,
            "{name}: only {longs} long flags (help, version, ...)?"
        );
        let (_, bash) = &completions[0];
        let registers =
            |line: &str| line.starts_with("complete ") && line.ends_with(&format!(" {name}"));
        assert!(
            bash.lines().map(str::trim).any(registers),
            "the bash completion does not register {name}:\n{bash}"
        );
    }
    // One page and three completions per binary, nothing else.
    assert_eq!(
        written.len(),
        commands.len() * (1 + gen_assets::SHELLS.len())
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// The workspace root: the product package, whose manifest holds the .deb's assets.
fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `[[bin]]` names and `[package.metadata.deb]` assets of the root Cargo.toml.
fn manifest() -> toml::Table {
    let text = read(&root().join("Cargo.toml"));
    text.parse().expect("Cargo.toml")
}

/// Every binary of the workspace: the product's `[[bin]]`s and the tools' `src/bin/*.rs`.
fn binaries(manifest: &toml::Table) -> BTreeSet<String> {
    let mut bins: BTreeSet<String> = manifest["bin"]
        .as_array()
        .expect("[[bin]]")
        .iter()
        .map(|b| b["name"].as_str().expect("bin name").to_owned())
        .collect();
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin");
    for entry in std::fs::read_dir(&tools).expect("tools/src/bin") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some(bin) = name.strip_suffix(".rs") {
            bins.insert(bin.to_owned());
        }
    }
    bins
}

#[test]
fn every_binary_has_a_command_and_is_packaged_under_its_installed_name() {
    let manifest = manifest();
    let bins = binaries(&manifest);
    let bins: BTreeSet<&str> = bins.iter().map(String::as_str).collect();
    let named: BTreeSet<String> = commands().iter().map(|c| c.get_name().to_owned()).collect();
    let named: BTreeSet<&str> = named.iter().map(String::as_str).collect();
    assert_eq!(bins, named, "the workspace's binaries vs args::commands()");

    let deb = &manifest["package"]["metadata"]["deb"];
    let assets = deb["assets"].as_array().expect("deb assets");
    let dest_of = |source: &str| -> Option<String> {
        assets.iter().find_map(|a| {
            let a = a.as_array()?;
            (a[0].as_str()? == source).then(|| a[1].as_str().unwrap_or_default().to_owned())
        })
    };
    for bin in &bins {
        let dest = dest_of(&format!("target/release/{bin}"))
            .unwrap_or_else(|| panic!("the package does not install {bin}"));
        let installed = match dest.strip_suffix('/') {
            Some(dir) => format!("{dir}/{bin}"),
            None => dest.clone(),
        };
        assert!(
            installed.ends_with(&format!("/{}", installed_name(bin))),
            "{bin} is installed as {installed}, its man page and completions are for {}",
            installed_name(bin)
        );
    }
    // The unit runs the proxy by the name it is installed under.
    let proxy = dest_of("target/release/proxy").expect("proxy asset");
    let unit = read(&root().join("packaging/zmq-grpc-proxy.service"));
    assert!(
        unit.contains(&format!("ExecStart=/{proxy}\n")),
        "packaging/zmq-grpc-proxy.service does not run /{proxy}"
    );
}
