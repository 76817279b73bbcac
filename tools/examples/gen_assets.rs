//! Writes the man pages and shell completions of every binary, generated from the same
//! `clap::Command`s the binaries parse with (`zmq_grpc_proxy_tools::args::commands`):
//!
//! ```text
//! cargo run --example gen_assets -- target/assets
//!   target/assets/man/<name>.1
//!   target/assets/completions/bash/<name>
//!   target/assets/completions/zsh/_<name>
//!   target/assets/completions/fish/<name>.fish
//! ```
//!
//! `<name>` is the name the Debian package installs the binary as
//! (`zmq_grpc_proxy_tools::args::installed_name`: the proxy is `zmq-grpc-proxy`), so that the
//! page `man` finds and the completion the shell loads are those of the command typed.
//! `cargo deb` packages what this writes (Cargo.toml, `[package.metadata.deb]`), and
//! `.ci/package-test` runs it first.
//!
//! Why an example and not a binary or a build script: a build script cannot use the
//! library it is building, and a `[[bin]]` would be built (with fat LTO) by every
//! `cargo build --release --bins` and sit next to the real binaries in `target/release`,
//! for something only packaging needs. An example is built by `cargo test`, in the dev
//! profile, and uses `clap_mangen`/`clap_complete` as dev-dependencies, so neither the
//! library nor any shipped binary links them. `tests/assets.rs` includes this file and runs
//! [`generate`] into a scratch directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap_complete::{Generator, Shell};
use clap_mangen::roff::{bold, italic, roman, Roff};
use zmq_grpc_proxy_tools::args::{commands, installed_name};

fn main() -> std::io::Result<()> {
    let mut argv = std::env::args_os().skip(1);
    let (Some(out), None) = (argv.next(), argv.next()) else {
        eprintln!("usage: gen_assets OUT_DIR   (writes OUT_DIR/man and OUT_DIR/completions)");
        std::process::exit(2);
    };
    for path in generate(Path::new(&out))? {
        println!("{}", path.display());
    }
    Ok(())
}

/// The shells completions are written for, and the directory of each under `completions/`.
pub const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "bash"),
    (Shell::Zsh, "zsh"),
    (Shell::Fish, "fish"),
];

/// Writes every page and completion under `out` (replacing `out/man` and
/// `out/completions`, so nothing stale is packaged); returns the files written.
pub fn generate(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let man_dir = out.join("man");
    let completions_dir = out.join("completions");
    for dir in [&man_dir, &completions_dir] {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::create_dir_all(&man_dir)?;
    let all = commands();
    let names: Vec<String> = all
        .iter()
        .map(|c| installed_name(c.get_name()).to_owned())
        .collect();
    let mut written = Vec::new();
    for command in all {
        let bin = command.get_name().to_owned();
        let name = installed_name(&bin).to_owned();
        // The page's title, NAME and SYNOPSIS, and the command completions are for.
        let mut command = command.display_name(name.clone()).bin_name(name.clone());
        command.build();

        let page = man_dir.join(format!("{name}.1"));
        let mut file = std::fs::File::create(&page)?;
        man_page(&command, &bin, &names, &mut file)?;
        file.sync_all()?;
        written.push(page);

        for (shell, dir) in SHELLS {
            let dir = completions_dir.join(dir);
            std::fs::create_dir_all(&dir)?;
            let file_name = match shell {
                // bash-completion loads `completions/<command>` when <command> is first
                // completed; zsh wants `_<command>`, fish `<command>.fish`.
                Shell::Bash => name.clone(),
                other => other.file_name(&name),
            };
            let path = dir.join(file_name);
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut command, name.clone(), &mut buf);
            std::fs::write(&path, buf)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// clap_mangen's page (name, synopsis, description, every option with its environment
/// variable, default and possible values), plus what `--help` cannot say: exit status,
/// environment, files and the other pages.
fn man_page(
    command: &clap::Command,
    bin: &str,
    all: &[String],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(command.clone())
        .section("1")
        .date(date())
        .source(format!("zmq-grpc-proxy {}", env!("CARGO_PKG_VERSION")))
        .manual("zmq-grpc-proxy");
    let mut page = Vec::new();
    man.render(&mut page)?;
    let page = String::from_utf8(page).map_err(std::io::Error::other)?;

    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    let mut codes = vec![
        (
            "0",
            "a clean stop: SIGINT or SIGTERM (after the drain), or the work asked for is done",
        ),
        ("1", "a failure, described on stderr"),
        (
            "2",
            "a usage error: a bad flag or value, or an address that cannot be bound",
        ),
    ];
    match bin {
        "proxy" | "grpc_server" => codes.push(("130", "a second signal during the drain")),
        "grpc_client" => codes[1].1 = "a call failed (the first failure is named on stderr)",
        "gossip_mesh" => codes[1].1 = "a rumor did not reach every member by the end of its stage",
        _ => {}
    }
    for (code, meaning) in codes {
        roff.control("TP", []);
        roff.text([bold(code)]);
        roff.text([roman(meaning)]);
    }

    roff.control("SH", ["ENVIRONMENT"]);
    roff.text([roman(
        "Every option can be given as the environment variable named under OPTIONS; \
         a flag given on the command line wins over its variable.",
    )]);
    roff.control("TP", []);
    roff.text([bold("RUST_LOG")]);
    roff.text([roman(
        "Log level and filter (default info). Logs go to stderr; the summary line a run \
         ends with goes to stdout.",
    )]);

    if bin == "proxy" {
        roff.control("SH", ["SIGNALS"]);
        for (signal, meaning) in [
            (
                "SIGTERM, SIGINT",
                "Stop accepting (after the shutdown delay), let open connections finish \
                 within the drain timeout, reset the rest, exit 0.",
            ),
            (
                "SIGHUP",
                "Re-read the configuration file and swap the routes if all of it is valid; \
                 otherwise log why and keep the old ones.",
            ),
        ] {
            roff.control("TP", []);
            roff.text([bold(signal)]);
            roff.text([roman(meaning)]);
        }
        roff.control("SH", ["FILES"]);
        for (file, meaning) in [
            (
                "/etc/zmq-grpc-proxy/proxy.toml",
                "The configuration the systemd service runs with (PROXY_CONFIG): any \
                 option, under its name in snake_case, and [[tls_route]] rules.",
            ),
            (
                "/usr/lib/systemd/system/zmq-grpc-proxy.socket",
                "The public port, held by systemd and passed to the proxy \
                 (socket activation).",
            ),
            (
                "/usr/lib/systemd/system/zmq-grpc-proxy.service",
                "The service: readiness by sd_notify, --check before start and reload.",
            ),
        ] {
            roff.control("TP", []);
            roff.text([italic(file)]);
            roff.text([roman(meaning)]);
        }
    }

    roff.control("SH", ["SEE ALSO"]);
    let others: Vec<String> = all
        .iter()
        .filter(|n| n.as_str() != installed_name(bin))
        .map(|n| format!("{n}(1)"))
        .collect();
    roff.text([
        roman(others.join(", ")),
        roman("; /usr/share/doc/zmq-grpc-proxy/README.md. "),
        roman("The demo and load tools are installed in /usr/lib/zmq-grpc-proxy/bin."),
    ]);
    // Before clap_mangen's last section, VERSION; `to_roff` leaves out the preamble that
    // `render` already wrote at the top.
    let extra = roff.to_roff();
    let page = match page.find("\n.SH VERSION") {
        Some(at) => format!("{}\n{extra}{}", &page[..at], &page[at + 1..]),
        None => page + &extra,
    };
    out.write_all(page.as_bytes())
}

/// The page's date: `SOURCE_DATE_EPOCH` if set (reproducible builds), else today, as
/// YYYY-MM-DD.
fn date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    // Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's civil_from_days).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
