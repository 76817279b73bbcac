//! Routes beyond the two protocols: a fallback backend for everything else, PROXY protocol
//! v2 headers (parsed back with the `ppp` crate), and several proxies sharing one port.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

use common::*;

#[test]
fn unrecognised_and_silent_clients_go_to_the_fallback_backend() {
    let fallback = TcpListener::bind("127.0.0.1:0").unwrap();
    let fb = fallback.local_addr().unwrap().to_string();
    let dead = format!("127.0.0.1:{}", free_port());
    let proxy = start_proxy(
        &dead,
        &dead,
        &[
            "--fallback-backend",
            &fb,
            "--detect-timeout-ms",
            "300",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let addr = proxy.listen_addr();

    // An HTTP/1 request reaches the fallback byte for byte, and its answer comes back.
    let mut client = TcpStream::connect(&addr).unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let (mut b, _) = fallback.accept().unwrap();
    let mut got = Vec::new();
    b.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    b.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
    drop(b);
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"HTTP/1.1 204 No Content\r\n\r\n");

    // A client that says nothing (a server-speaks-first protocol) is sent there at the
    // detect timeout.
    let mut silent = TcpStream::connect(&addr).unwrap();
    let (mut b, _) = fallback.accept().unwrap();
    b.write_all(b"SSH-2.0-banner\r\n").unwrap();
    let mut banner = [0u8; 16];
    silent.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-banner\r\n");
    drop((b, silent));
    proxy.wait_for_logs(&["closed", "route=fallback"], 2, PATIENCE);
}

#[test]
fn proxy_protocol_v2_header_precedes_the_client_bytes() {
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let b_addr = backend.local_addr().unwrap().to_string();
    let proxy = start_proxy(&b_addr, &b_addr, &["--proxy-protocol", "zmq"]);
    let proxy_addr: SocketAddr = proxy.listen_addr().parse().unwrap();

    let mut client = TcpStream::connect(proxy_addr).unwrap();
    let client_addr = client.local_addr().unwrap();
    client.write_all(&ZMTP_SIGNATURE).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let (mut b, _) = backend.accept().unwrap();
    let mut got = Vec::new();
    b.read_to_end(&mut got).unwrap();

    let header = ppp::v2::Header::try_from(got.as_slice()).expect("a valid PROXY v2 header");
    assert_eq!(header.command, ppp::v2::Command::Proxy);
    assert_eq!(header.protocol, ppp::v2::Protocol::Stream);
    match header.addresses {
        ppp::v2::Addresses::IPv4(a) => {
            assert_eq!(
                SocketAddr::from((a.source_address, a.source_port)),
                client_addr
            );
            assert_eq!(
                SocketAddr::from((a.destination_address, a.destination_port)),
                proxy_addr
            );
        }
        other => panic!("expected IPv4 addresses, got {other:?}"),
    }
    assert_eq!(
        &got[header.len()..],
        &ZMTP_SIGNATURE,
        "then the client's own bytes"
    );

    // Routes not listed get no header.
    let mut h2 = TcpStream::connect(proxy_addr).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    h2.shutdown(Shutdown::Write).unwrap();
    let (mut b, _) = backend.accept().unwrap();
    let mut got = Vec::new();
    b.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
}

#[test]
fn two_processes_share_a_port_with_reuse_port() {
    let pull = Proc::spawn("zmq_pull", &["--bind", "tcp://127.0.0.1:*"]);
    let zmq = pull.listen_addr().trim_start_matches("tcp://").to_owned();
    let first = start_proxy(&zmq, &zmq, &["--reuse-port"]);
    let addr = first.listen_addr();
    let second = Proc::spawn(
        "proxy",
        &[
            "--listen",
            &addr,
            "--zmq-backend",
            &zmq,
            "--grpc-backend",
            &zmq,
            "--reuse-port",
        ],
    );
    assert_eq!(
        second.listen_addr(),
        addr,
        "the second process bound the same port"
    );

    // The kernel spreads connections by hash: with 64 of them, both processes get some
    // (the chance that all land on one is 2^-63).
    let conns: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut c = TcpStream::connect(&addr).unwrap();
            c.write_all(&ZMTP_SIGNATURE).unwrap();
            c.set_read_timeout(Some(PATIENCE)).unwrap();
            let mut sig = [0u8; 10];
            c.read_exact(&mut sig).unwrap();
            assert_eq!((sig[0], sig[9]), (0xFF, 0x7F));
            c
        })
        .collect();
    drop(conns);
    first.wait_for_logs(&["closed", "route=zmq"], 1, PATIENCE);
    second.wait_for_logs(&["closed", "route=zmq"], 1, PATIENCE);
    let total =
        first.count_logs(&["closed", "route=zmq"]) + second.count_logs(&["closed", "route=zmq"]);
    assert!(total <= 64);
}
