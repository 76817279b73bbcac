//! Every ZMQ socket pattern and security mechanism passes through the proxy untouched: the
//! `zmq` crate (real libzmq) on both ends, the real proxy binary between them. ZMTP 2.0 is
//! spoken by hand (libzmq 4.3 only initiates 3.x) against the real zmq_pull.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;

use common::*;
use prost::Message as _;

/// How long any single receive may block before the test fails instead of hanging.
const RECV_TIMEOUT_MS: i32 = 20_000;

#[derive(Clone, Copy, Debug)]
enum Mechanism {
    Null,
    Plain,
}

/// A ZMQ server socket bound on a free port, a proxy in front of it, and a client socket
/// connected to the proxy.
struct Pair {
    server: zmq::Socket,
    client: zmq::Socket,
    _proxy: Proc,
    _ctx: zmq::Context,
    zap: Option<mpsc::Receiver<(String, String)>>,
}

fn pair(server_type: zmq::SocketType, client_type: zmq::SocketType, mech: Mechanism) -> Pair {
    pair_with_identity(server_type, client_type, mech, None)
}

fn pair_with_identity(
    server_type: zmq::SocketType,
    client_type: zmq::SocketType,
    mech: Mechanism,
    identity: Option<&[u8]>,
) -> Pair {
    let ctx = zmq::Context::new();
    let zap = matches!(mech, Mechanism::Plain).then(|| zap_handler(&ctx));
    let server = ctx.socket(server_type).unwrap();
    let client = ctx.socket(client_type).unwrap();
    for s in [&server, &client] {
        s.set_rcvtimeo(RECV_TIMEOUT_MS).unwrap();
        s.set_sndtimeo(RECV_TIMEOUT_MS).unwrap();
        s.set_linger(0).unwrap();
    }
    if let Mechanism::Plain = mech {
        server.set_plain_server(true).unwrap();
        server.set_zap_domain("test").unwrap();
        client.set_plain_username(Some("admin")).unwrap();
        client.set_plain_password(Some("secret")).unwrap();
    }
    if let Some(id) = identity {
        client.set_identity(id).unwrap();
    }
    server.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = server.get_last_endpoint().unwrap().unwrap();
    let proxy = start_proxy(
        endpoint.trim_start_matches("tcp://"),
        &format!("127.0.0.1:{}", free_port()),
        &[],
    );
    client
        .connect(&format!("tcp://{}", proxy.listen_addr()))
        .unwrap();
    Pair {
        server,
        client,
        _proxy: proxy,
        _ctx: ctx,
        zap,
    }
}

/// A ZAP handler (RFC 27) that accepts admin/secret and reports every request it sees, so
/// the test knows the PLAIN credentials crossed the proxy intact.
fn zap_handler(ctx: &zmq::Context) -> mpsc::Receiver<(String, String)> {
    let sock = ctx.socket(zmq::REP).unwrap();
    sock.bind("inproc://zeromq.zap.01").unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        while let Ok(frames) = sock.recv_multipart(0) {
            let text = |i: usize| String::from_utf8_lossy(&frames[i]).into_owned();
            let (user, pass) = (text(6), text(7));
            let ok = user == "admin" && pass == "secret";
            let _ = tx.send((user, pass));
            let reply: Vec<Vec<u8>> = vec![
                frames[0].clone(),
                frames[1].clone(),
                if ok { b"200".to_vec() } else { b"400".to_vec() },
                if ok {
                    b"OK".to_vec()
                } else {
                    b"denied".to_vec()
                },
                b"admin".to_vec(),
                Vec::new(),
            ];
            if sock.send_multipart(reply, 0).is_err() {
                break;
            }
        }
    });
    rx
}

fn check_zap(p: &Pair) {
    if let Some(zap) = &p.zap {
        let (user, pass) = zap
            .try_recv()
            .expect("the ZAP handler authenticated the client");
        assert_eq!((user.as_str(), pass.as_str()), ("admin", "secret"));
    }
}

fn push_pull(mech: Mechanism) {
    let p = pair(zmq::PULL, zmq::PUSH, mech);
    for i in 0..200u32 {
        p.client.send(format!("msg {i}").as_bytes(), 0).unwrap();
    }
    for i in 0..200u32 {
        assert_eq!(
            p.server.recv_bytes(0).unwrap(),
            format!("msg {i}").as_bytes()
        );
    }
    check_zap(&p);
}

fn req_rep(mech: Mechanism) {
    let p = pair(zmq::REP, zmq::REQ, mech);
    for i in 0..50u32 {
        p.client.send(format!("ping {i}").as_bytes(), 0).unwrap();
        assert_eq!(
            p.server.recv_bytes(0).unwrap(),
            format!("ping {i}").as_bytes()
        );
        p.server.send(format!("pong {i}").as_bytes(), 0).unwrap();
        assert_eq!(
            p.client.recv_bytes(0).unwrap(),
            format!("pong {i}").as_bytes()
        );
    }
    check_zap(&p);
}

fn dealer_router(mech: Mechanism) {
    let identity = b"dealer-1";
    let p = pair_with_identity(zmq::ROUTER, zmq::DEALER, mech, Some(identity));
    for i in 0..20u32 {
        let body = format!("request {i}");
        p.client
            .send_multipart([&b""[..], body.as_bytes()], 0)
            .unwrap();
        let frames = p.server.recv_multipart(0).unwrap();
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert_eq!(frames[0], identity, "routing id crosses the proxy");
        assert_eq!(frames[2], body.as_bytes());
        let reply = format!("reply {i}");
        p.server
            .send_multipart([&frames[0][..], b"", reply.as_bytes()], 0)
            .unwrap();
        let back = p.client.recv_multipart(0).unwrap();
        assert_eq!(back, vec![Vec::new(), reply.into_bytes()]);
    }
    check_zap(&p);
}

fn pub_sub(mech: Mechanism) {
    // XPUB is PUB that also hands the application each subscription, so the test can see
    // the subscription arrive through the proxy before publishing (no slow-joiner sleep).
    let p = pair(zmq::XPUB, zmq::SUB, mech);
    p.client.set_subscribe(b"a:").unwrap();
    assert_eq!(
        p.server.recv_bytes(0).unwrap(),
        b"\x01a:",
        "subscription upstream"
    );
    for i in 0..20u32 {
        p.server.send(format!("b:{i}").as_bytes(), 0).unwrap();
        p.server.send(format!("a:{i}").as_bytes(), 0).unwrap();
    }
    for i in 0..20u32 {
        assert_eq!(
            p.client.recv_bytes(0).unwrap(),
            format!("a:{i}").as_bytes(),
            "only subscribed topics, in order"
        );
    }
    p.client.set_rcvtimeo(0).unwrap();
    assert_eq!(
        p.client.recv_bytes(0),
        Err(zmq::Error::EAGAIN),
        "nothing filtered leaks"
    );
    check_zap(&p);
}

#[test]
fn push_pull_null() {
    push_pull(Mechanism::Null);
}
#[test]
fn push_pull_plain() {
    push_pull(Mechanism::Plain);
}
#[test]
fn req_rep_null() {
    req_rep(Mechanism::Null);
}
#[test]
fn req_rep_plain() {
    req_rep(Mechanism::Plain);
}
#[test]
fn dealer_router_null() {
    dealer_router(Mechanism::Null);
}
#[test]
fn dealer_router_plain() {
    dealer_router(Mechanism::Plain);
}
#[test]
fn pub_sub_with_filter_null() {
    pub_sub(Mechanism::Null);
}
#[test]
fn pub_sub_with_filter_plain() {
    pub_sub(Mechanism::Plain);
}

/// ZMTP 2.0, by hand: signature, revision 1, socket type, identity, then one message frame
/// carrying a protobuf Message. The real zmq_pull (libzmq 4.3) must receive it.
#[test]
fn zmtp_2_0_peer_passes_through() {
    let mut stack = Stack::start(Some(1), &[]);
    let mut s = TcpStream::connect(stack.proxy_addr()).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F]).unwrap();
    let mut sig = [0u8; 10];
    s.read_exact(&mut sig).unwrap();
    assert_eq!((sig[0], sig[9]), (0xFF, 0x7F));
    const PUSH: u8 = 8;
    // Revision 1 = ZMTP 2.0; then socket type and an empty identity frame (flags, length).
    s.write_all(&[0x01, PUSH, 0x00, 0x00]).unwrap();
    let body = zmq_grpc_proxy_tools::peers::message::build("zmtp2", 0, 100).encode_to_vec();
    let mut frame = vec![0x00, body.len() as u8];
    frame.extend_from_slice(&body);
    s.write_all(&frame).unwrap();
    assert!(stack.pull.wait_exit(PATIENCE).success());
    let summary = stack.pull.summary();
    assert_eq!(summary["received"], "1");
    assert_eq!(summary["corrupt"], "0");
    stack.pull.wait_for_log("sender=zmtp2", PATIENCE);
}
