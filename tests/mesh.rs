//! The gossip mesh (issue 12): opaque frames from senders that are not ours, the dual-stack
//! sender against every kind of peer, and `gossip_mesh` rolling a mesh from ZMQ to gRPC.

mod common;

use std::process::Command;

use common::*;

/// Multi-part messages from a plain libzmq PUSH socket (not our schema, not our code):
/// every one is counted toward `--count`, once, as `foreign`.
#[test]
fn zmq_pull_counts_foreign_multipart_messages_toward_count() {
    let mut pull = Proc::spawn("zmq_pull", &["--bind", "tcp://127.0.0.1:*", "--count", "5"]);
    let endpoint = pull.listen_addr();
    let context = zmq::Context::new();
    let push = context.socket(zmq::PUSH).unwrap();
    push.set_linger(5_000).unwrap();
    push.connect(&endpoint).unwrap();
    let mut bytes = 0;
    for i in 0..5u8 {
        // A Habitat-like envelope: three opaque parts, the last one binary.
        let parts: [Vec<u8>; 3] = [b"wire".to_vec(), vec![i; 7], vec![0xff, 0x00, i]];
        bytes += parts.iter().map(Vec::len).sum::<usize>();
        push.send_multipart(parts, 0).unwrap();
    }
    assert!(pull.wait_exit(PATIENCE).success(), "{}", pull.stderr());
    let s = pull.summary();
    assert_eq!(s["foreign"], "5", "{s:?}");
    assert_eq!(s["received"], "0", "{s:?}");
    assert_eq!(s["bytes"], bytes.to_string(), "{s:?}");
    // The new key comes last: the keys scripts parse keep their positions.
    let line = pull.stdout();
    assert!(line.trim_end().ends_with("foreign=5"), "{line}");
}

/// The same with pyzmq, a sender built on another binding, when it is installed
/// (`pip install pyzmq`); without it the test says so and checks nothing more.
#[test]
fn zmq_pull_counts_pyzmq_messages_as_foreign() {
    let probe = Command::new("python3").args(["-c", "import zmq"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("pyzmq not installed: skipping the pyzmq sender");
        return;
    }
    let mut pull = Proc::spawn("zmq_pull", &["--bind", "tcp://127.0.0.1:*", "--count", "4"]);
    let endpoint = pull.listen_addr();
    let script = format!(
        "import zmq\n\
         s = zmq.Context().socket(zmq.PUSH)\n\
         s.setsockopt(zmq.LINGER, 5000)\n\
         s.connect('{endpoint}')\n\
         for i in range(4):\n    s.send_multipart([b'py', bytes([i]) * 3])\n\
         s.close()\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(pull.wait_exit(PATIENCE).success(), "{}", pull.stderr());
    assert_eq!(pull.summary_u64("foreign"), 4);
    assert_eq!(pull.summary_u64("bytes"), 4 * 5);
}
