//! Interception on a live port (`--intercept-port`): the proxy is put in front of an
//! unmodified member on the member's own port. A netfilter rule redirects *inbound* TCP for
//! that port to the proxy's listener (as Istio's and linkerd's proxy-init do), the member
//! keeps its port, and no peer changes anything; the proxy reaches the member at the
//! address the client dialled (`--zmq-backend original`, read back with
//! `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`: [`original_dst`]).
//!
//! # The table
//!
//! The proxy owns exactly one nftables table, `inet zgp_intercept_PORT` ([`table_name`]),
//! and never touches another. Its one chain hooks nat `prerouting`, so only packets that
//! arrive from the network are redirected: the proxy's own connection to the member is
//! locally originated (it takes the `output` hook, and packets looped back over `lo` have
//! their NAT decided there already), so the member's listener stays reachable. UDP on the
//! same port number (Butterfly's SWIM) is not matched. See [`Plan::ruleset`].
//!
//! Installed once the proxy listens ([`install`]). When the proxy begins to drain (before it
//! stops accepting), its redirect rule is deleted ([`Installed::stop_redirecting`]): new
//! connections go to the member directly from then on. The table itself stays until the
//! drain has ended and goes on exit ([`Installed::remove`]): deleting it, or any change
//! that leaves the namespace with no rule needing connection tracking, makes the kernel
//! stop translating the flows it had redirected, which resets the connections still
//! draining through the proxy (a SIGTERM test that deleted the table at once lost 2 of 300
//! gossip messages in one of five runs under load; see [`Plan::ruleset`] for the rule
//! that prevents it). The table is written in one `nft -f -` transaction, so a stale
//! table of a crashed predecessor is replaced, never merged with.
//!
//! # Failing open
//!
//! A redirect to a port where nothing listens would black-hole the member's gossip. Three
//! layers remove the table when the proxy is gone:
//! - graceful stop: the proxy deletes the rule first thing on SIGTERM/SIGINT, and the
//!   table once drained;
//! - SIGKILL, crash, OOM kill: a guard process ([`Installed`]) started before the table is
//!   installed holds the read end of a pipe whose write end only the proxy holds. The
//!   kernel closes it when the proxy dies, however it dies; the guard then deletes the
//!   table *by its handle*, so a successor's table of the same name is never touched. It
//!   runs in its own process group (a Ctrl-C or a group kill meant for the proxy does not
//!   take it too) and ignores SIGINT/SIGTERM/SIGHUP;
//! - under systemd, `ExecStopPost=zmq-grpc-proxy --intercept-remove PORT` in the
//!   intercepting unit, for the case where the guard was killed too (a cgroup-wide kill).
//!
//! # Why `nft` and not a crate
//!
//! The crates were weighed: `nftables` (JSON over the `nft` binary: the same dependency on
//! `nft`, plus a schema layer we do not need for one table), `rustables` and `nftnl`
//! (netlink; `nftnl` binds the C `libnftnl`, `rustables` is a small project with few
//! releases). Running `nft -f -` with a generated ruleset keeps the dependency to the
//! package operators already have for their firewall, its error messages are the ones they
//! know, and what the proxy installs is exactly what `nft list table` shows them. The exit
//! status and stderr of every call are checked.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};

/// The name of the table the proxy owns for intercepting `port`.
pub fn table_name(port: u16) -> String {
    format!("zgp_intercept_{port}")
}

/// What to intercept and where to: checked against the listener before anything is
/// installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The member's port: inbound TCP to it is redirected.
    pub port: u16,
    /// The proxy's listen port.
    pub to_port: u16,
    /// Redirect IPv4 (the listener takes IPv4 connections).
    pub v4: bool,
    /// Redirect IPv6 (the listener is bound to `[::]`).
    pub v6: bool,
}

impl Plan {
    /// The plan for intercepting `port` into a proxy listening on `listen`. A redirected
    /// connection arrives at the receiving interface's own address, so the proxy must
    /// listen on the wildcard address: `0.0.0.0` takes IPv4 only, `[::]` both (Linux
    /// accepts IPv4 on an IPv6 wildcard socket unless `net.ipv6.bindv6only` is set).
    pub fn new(port: u16, listen: SocketAddr) -> Result<Plan, String> {
        if !listen.ip().is_unspecified() {
            return Err(format!(
                "--intercept-port needs the proxy to listen on the wildcard address \
                 (--listen 0.0.0.0:{p} or [::]:{p}), not {listen}: redirected connections \
                 arrive at the receiving interface's own address",
                p = listen.port()
            ));
        }
        if port == listen.port() {
            return Err(format!(
                "--intercept-port {port} is the proxy's own listen port; intercept the \
                 member's port and listen on another"
            ));
        }
        let v6 = listen.is_ipv6();
        Ok(Plan {
            port,
            to_port: listen.port(),
            v4: true,
            v6,
        })
    }

    /// The ruleset `nft -f -` is given: one transaction that creates the table (so the
    /// `delete` cannot fail), deletes it with whatever a crashed predecessor left in it,
    /// and writes it anew.
    ///
    /// The chain's first rule never matches (a nat chain sees only the first packet of a
    /// flow, never an established one); it is there for its `ct` expression, which keeps
    /// connection tracking on in the namespace once the redirect rule is deleted at the
    /// start of a drain. Without a rule that needs conntrack the kernel stops tracking,
    /// and with it stops translating, the flows already redirected: their next packets
    /// reach the member's port as strays and are reset (measured: a connection held
    /// across `nft flush chain` is reset; with this rule it carries on).
    pub fn ruleset(&self) -> String {
        let name = table_name(self.port);
        let family = match (self.v4, self.v6) {
            (true, true) => "",
            (true, false) => "meta nfproto ipv4 ",
            (false, _) => "meta nfproto ipv6 ",
        };
        format!(
            "add table inet {name}\n\
             delete table inet {name}\n\
             table inet {name} {{\n\
             \tcomment \"zmq-grpc-proxy: inbound tcp/{port} to the proxy on port {to}; \
             removed when the proxy stops\"\n\
             \tchain prerouting {{\n\
             \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
             \t\tct state established,related accept comment \"{keep}\"\n\
             \t\t{family}iifname != \"lo\" tcp dport {port} fib daddr type local redirect to :{to}\n\
             \t}}\n\
             }}\n",
            port = self.port,
            to = self.to_port,
            keep = KEEP_TRANSLATING,
        )
    }
}

/// The comment on the rule that keeps connection tracking on (see [`Plan::ruleset`]).
const KEEP_TRANSLATING: &str = "never matches: keeps conntrack on, so connections already redirected are still translated while the proxy drains";

/// Why nftables could not be used. Every variant names what is missing.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("the `nft` command was not found (install nftables: apt install nftables)")]
    Missing,
    #[error("nft {action}: not permitted: intercepting needs root or CAP_NET_ADMIN ({stderr})")]
    NotPermitted { action: String, stderr: String },
    #[error(
        "nft {action}: the kernel lacks nftables NAT support \
         (nf_tables, nft_nat, nft_redir, nft_fib): {stderr}"
    )]
    Unsupported { action: String, stderr: String },
    #[error("nft {action} failed: {stderr}")]
    Failed { action: String, stderr: String },
    #[error("cannot run nft: {0}")]
    Io(#[from] io::Error),
}

/// Runs `nft args…` with `stdin`, returning stdout or the classified failure.
fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
    let mut cmd = Command::new("nft");
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(NftError::Missing),
        Err(e) => return Err(e.into()),
    };
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr)
        .trim()
        .replace('\n', " ");
    let action = args.join(" ");
    Err(if stderr.contains("Operation not permitted") {
        NftError::NotPermitted { action, stderr }
    } else if stderr.contains("Protocol not supported")
        || stderr.contains("not supported")
        || stderr.contains("No such file or directory") && args.first() == Some(&"-f")
    {
        NftError::Unsupported { action, stderr }
    } else {
        NftError::Failed { action, stderr }
    })
}

/// The table installed, and the guard that removes it if this process dies. Dropping it
/// removes the table.
#[derive(Debug)]
pub struct Installed {
    port: u16,
    handle: u64,
    /// The write end of the guard's pipe: closed by the kernel when this process dies.
    guard_pipe: Option<ChildStdin>,
    guard: Option<Child>,
    removed: bool,
}

/// Installs the table `plan` describes, after starting the guard that removes it should
/// this process die. Fails, naming what is missing, without nftables or without privilege;
/// nothing is left behind then.
pub fn install(plan: &Plan) -> Result<Installed, NftError> {
    // Say what is missing before anything runs: `nft` itself, then the privilege to use it
    // (listing needs CAP_NET_ADMIN as writing does).
    nft(&["list", "tables"], None)?;
    nft(&["-f", "-"], Some(&plan.ruleset()))?;
    let handle = match table_handle(plan.port) {
        Ok(Some(h)) => h,
        Ok(None) => {
            return Err(NftError::Failed {
                action: "list table".into(),
                stderr: format!(
                    "table inet {} vanished after it was added",
                    table_name(plan.port)
                ),
            })
        }
        Err(e) => {
            let _ = remove(plan.port);
            return Err(e);
        }
    };
    let mut installed = Installed {
        port: plan.port,
        handle,
        guard_pipe: None,
        guard: None,
        removed: false,
    };
    match spawn_guard(plan.port, handle) {
        Ok((child, pipe)) => {
            installed.guard = Some(child);
            installed.guard_pipe = Some(pipe);
        }
        Err(e) => {
            installed.remove();
            return Err(e.into());
        }
    }
    Ok(installed)
}

/// The kernel's handles of table `inet zgp_intercept_PORT` and of its redirect rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Handles {
    table: u64,
    /// `None` once the rule is deleted (the table is draining).
    rule: Option<u64>,
}

/// The handles of table `inet zgp_intercept_PORT`, `None` if there is no such table.
fn handles(port: u16) -> Result<Option<Handles>, NftError> {
    let name = table_name(port);
    let listing = match nft(&["-a", "list", "table", "inet", &name], None) {
        Ok(listing) => listing,
        Err(NftError::Failed { stderr, .. }) if stderr.contains("No such file or directory") => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    // `table inet zgp_intercept_9638 { # handle 12` … `… redirect to :7000 # handle 3`
    let handle_on =
        |line: &str| -> Option<u64> { line.rsplit_once("# handle ")?.1.trim().parse().ok() };
    let table = listing
        .lines()
        .find(|l| l.trim_start().starts_with("table "))
        .and_then(handle_on);
    let rule = listing
        .lines()
        .find(|l| l.contains(" redirect to "))
        .and_then(handle_on);
    Ok(table.map(|table| Handles { table, rule }))
}

fn table_handle(port: u16) -> Result<Option<u64>, NftError> {
    Ok(handles(port)?.map(|h| h.table))
}

/// The guard: a shell that waits for end of file on its stdin (the proxy's end of the
/// pipe closes when the proxy exits or dies), then deletes table `handle`. Handles are
/// never reused while the system runs, so a table a successor installed is left alone.
fn spawn_guard(port: u16, handle: u64) -> io::Result<(Child, ChildStdin)> {
    use std::os::unix::process::CommandExt;
    let name = table_name(port);
    let script = format!(
        "trap '' INT TERM HUP\n\
         cat >/dev/null\n\
         if nft delete table inet handle {handle} 2>/dev/null; then\n\
         \techo \"zmq-grpc-proxy intercept guard: the proxy is gone; removed nftables table \
         inet {name} (handle {handle}): tcp/{port} goes to the member directly\" >&2\n\
         fi\n"
    );
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        // Its own process group: a Ctrl-C or `kill -- -PGID` aimed at the proxy must not
        // take the guard with it.
        .process_group(0)
        .spawn()?;
    let pipe = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("guard has no stdin"))?;
    Ok((child, pipe))
}

impl Installed {
    /// The table's handle in the kernel.
    pub fn handle(&self) -> u64 {
        self.handle
    }

    /// The intercepted port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops redirecting new connections: deletes the redirect rule, and keeps the table
    /// (with the rule that keeps conntrack on, [`Plan::ruleset`]) until
    /// [`Installed::remove`]. Deleting the whole table now would reset the connections
    /// already redirected: the kernel would stop translating them. Returns whether a rule
    /// was deleted. If it cannot be deleted, the table is (the redirect
    /// must not outlive the proxy's will to serve it).
    pub fn stop_redirecting(&mut self) -> bool {
        let name = table_name(self.port);
        let result = match handles(self.port) {
            // Only our own table: a successor may have replaced it (same name, new handle).
            Ok(Some(Handles {
                table,
                rule: Some(rule),
            })) if table == self.handle => {
                let rule = rule.to_string();
                let args = [
                    "delete",
                    "rule",
                    "inet",
                    &name,
                    "prerouting",
                    "handle",
                    &rule,
                ];
                nft(&args, None).map(|_| true)
            }
            Ok(_) => Ok(false),
            Err(e) => Err(e),
        };
        match result {
            Ok(deleted) => deleted,
            Err(e) => {
                tracing::warn!(error = %e, table = %name,
                               "could not delete the redirect rule; deleting the table");
                self.remove()
            }
        }
    }

    /// Deletes this table (by its handle) if it is still there, and lets the guard go.
    /// Returns whether it was still there. Errors are logged, never fatal: the guard and
    /// `--intercept-remove` are behind it.
    pub fn remove(&mut self) -> bool {
        let mut was_there = false;
        if !self.removed {
            let handle = self.handle.to_string();
            match nft(&["delete", "table", "inet", "handle", &handle], None) {
                Ok(_) => {
                    was_there = true;
                    self.removed = true;
                }
                Err(NftError::Failed { stderr, .. })
                    if stderr.contains("No such file or directory") =>
                {
                    self.removed = true;
                }
                // Left for the next try (on exit), then the guard.
                Err(e) => tracing::warn!(error = %e, table = %table_name(self.port),
                                         "could not remove the interception table"),
            }
        }
        if !self.removed {
            return false;
        }
        // Closing our end makes the guard try (the table is gone: it finds nothing) and exit.
        drop(self.guard_pipe.take());
        if let Some(mut guard) = self.guard.take() {
            let _ = guard.wait();
        }
        was_there
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `--intercept-remove PORT`: deletes table `inet zgp_intercept_PORT` if present. Returns
/// whether it was there; absent is not an error. One transaction (add, then delete), so it
/// cannot race with another remover.
pub fn remove(port: u16) -> Result<bool, NftError> {
    let was_there = table_handle(port)?.is_some();
    let name = table_name(port);
    nft(
        &["-f", "-"],
        Some(&format!(
            "add table inet {name}\ndelete table inet {name}\n"
        )),
    )?;
    Ok(was_there)
}

/// Where a redirected connection was going before the redirect: the member's own listener.
/// `None` if the connection was not redirected (it dialled the proxy's port itself, or
/// arrived without NAT), which must not be relayed: it would loop back into the proxy.
pub fn original_dst(stream: &tokio::net::TcpStream) -> io::Result<Option<SocketAddr>> {
    let socket = socket2::SockRef::from(stream);
    let local = stream.local_addr()?;
    let v4 = match local {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
    };
    let original = if v4 {
        socket.original_dst_v4()
    } else {
        socket.original_dst_v6()
    };
    let original = match original {
        Ok(addr) => addr.as_socket(),
        // No conntrack entry for it: nothing was redirected.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) => None,
        Err(e) => return Err(e),
    };
    Ok(original.filter(|orig| !same_endpoint(*orig, local)))
}

/// `a` and `b` name the same endpoint, seeing through IPv4-mapped IPv6 addresses.
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |s: SocketAddr| (s.ip().to_canonical(), s.port());
    canon(a) == canon(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_needs_the_wildcard_and_another_port() {
        let p = Plan::new(9638, "0.0.0.0:7000".parse().unwrap()).unwrap();
        assert_eq!((p.port, p.to_port, p.v4, p.v6), (9638, 7000, true, false));
        let p = Plan::new(9638, "[::]:7000".parse().unwrap()).unwrap();
        assert!(p.v4 && p.v6);
        let e = Plan::new(9638, "127.0.0.1:7000".parse().unwrap()).unwrap_err();
        assert!(
            e.contains("wildcard") && e.contains("127.0.0.1:7000"),
            "{e}"
        );
        let e = Plan::new(7000, "0.0.0.0:7000".parse().unwrap()).unwrap_err();
        assert!(e.contains("own listen port"), "{e}");
    }

    #[test]
    fn ruleset_replaces_its_own_table_and_matches_inbound_tcp_only() {
        let v4 = Plan::new(9638, "0.0.0.0:7000".parse().unwrap())
            .unwrap()
            .ruleset();
        let lines: Vec<&str> = v4.lines().map(str::trim).collect();
        assert_eq!(lines[0], "add table inet zgp_intercept_9638");
        assert_eq!(lines[1], "delete table inet zgp_intercept_9638");
        assert!(lines.contains(&"type nat hook prerouting priority dstnat; policy accept;"));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("ct state established,related accept")));
        assert!(lines.contains(
            &"meta nfproto ipv4 iifname != \"lo\" tcp dport 9638 fib daddr type local redirect to :7000"
        ));
        // No other table is named.
        let tables = v4.lines().filter(|l| l.contains("table ")).count();
        let ours = v4.matches("table inet zgp_intercept_9638").count();
        assert_eq!(tables, ours);
        let both = Plan::new(9638, "[::]:7000".parse().unwrap())
            .unwrap()
            .ruleset();
        assert!(both.contains("\t\tiifname != \"lo\" tcp dport 9638"));
    }

    #[test]
    fn same_endpoint_sees_through_mapped_addresses() {
        assert!(same_endpoint(
            "[::ffff:10.0.0.2]:7000".parse().unwrap(),
            "10.0.0.2:7000".parse().unwrap()
        ));
        assert!(!same_endpoint(
            "10.0.0.2:9638".parse().unwrap(),
            "10.0.0.2:7000".parse().unwrap()
        ));
    }
}
