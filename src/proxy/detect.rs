//! Protocol detection: the first bytes of a connection → which protocol it speaks.
//!
//! This is a pure function over bytes, with no I/O and no clock, so it is tested on tables
//! of byte strings and on arbitrary splits of them. The caller (the proxy) reads the prefix
//! incrementally, calls [`detect`] after every read, and owns the timeout.
//!
//! Two rules shape it (see `PROTOCOLS.md`):
//!
//! * **Decide as early as the bytes allow, never later.** libzmq sends only the 10-byte
//!   ZMTP signature (`FF` + 8 bytes padding + `7F`) and then waits for the peer's signature
//!   before sending its version byte. A detector that asks for an 11th byte deadlocks with
//!   every ZMQ client. So ZMTP is matched on exactly bytes 0 and 9; the padding is never
//!   inspected because libzmq fills it with the routing-id length + 1.
//! * **Never match on less than the whole signature.** A stray `FF` from a port scanner, or
//!   `PRI * HTTP` without the rest of the HTTP/2 preface, is [`Detection::NeedMore`], never
//!   a match: a wrong match would tie up a backend connection with a client that is not
//!   speaking its protocol. Conversely a mismatch is reported at the first byte that
//!   proves it, so an HTTP/1 `POST` is rejected at its second byte, not after 24.

/// A protocol the proxy can route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// ZeroMQ's ZMTP 2.0 or 3.x (the 10-byte signature `FF ×8 7F`).
    Zmtp,
    /// HTTP/2 with prior knowledge, as every gRPC client over cleartext sends it.
    Http2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Zmtp => "zmq",
            Protocol::Http2 => "grpc",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// The prefix holds a complete signature of this protocol.
    Matched(Protocol),
    /// The prefix is consistent with at least one protocol but too short to tell.
    NeedMore,
    /// No supported protocol starts with these bytes.
    NoMatch,
}

/// Length of the ZMTP 2.0/3.x signature: `FF`, 8 bytes of padding, `7F`.
pub const ZMTP_SIGNATURE_LEN: usize = 10;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The longest prefix [`detect`] ever needs before it decides. A reader that has buffered
/// this many bytes without a decision has a bug, not a slow client.
pub const MAX_PREFIX_LEN: usize = HTTP2_PREFACE.len();

/// Classifies the first bytes of a connection.
///
/// `detect(p)` for a prefix `p` of a stream is consistent with `detect` on any longer
/// prefix: once it returns `Matched` or `NoMatch`, more bytes never change the answer.
pub fn detect(prefix: &[u8]) -> Detection {
    match (zmtp(prefix), http2(prefix)) {
        (Detection::Matched(p), _) | (_, Detection::Matched(p)) => Detection::Matched(p),
        (Detection::NeedMore, _) | (_, Detection::NeedMore) => Detection::NeedMore,
        _ => Detection::NoMatch,
    }
}

fn zmtp(prefix: &[u8]) -> Detection {
    match prefix.first() {
        None => Detection::NeedMore,
        Some(&b) if b != 0xFF => Detection::NoMatch,
        Some(_) => match prefix.get(ZMTP_SIGNATURE_LEN - 1) {
            None => Detection::NeedMore,
            Some(&0x7F) => Detection::Matched(Protocol::Zmtp),
            Some(_) => Detection::NoMatch,
        },
    }
}

fn http2(prefix: &[u8]) -> Detection {
    let n = prefix.len().min(HTTP2_PREFACE.len());
    if prefix[..n] != HTTP2_PREFACE[..n] {
        Detection::NoMatch
    } else if n < HTTP2_PREFACE.len() {
        Detection::NeedMore
    } else {
        Detection::Matched(Protocol::Http2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Detection::*;
    use Protocol::*;

    /// A ZMTP 3.x greeting exactly as libzmq writes it: signature (padding = routing-id
    /// length + 1, big-endian), major, minor, 20-byte mechanism, as-server, 31 zero bytes.
    fn zmtp3_greeting(minor: u8, mechanism: &str, padding: u64) -> Vec<u8> {
        let mut g = vec![0xFF];
        g.extend_from_slice(&padding.to_be_bytes());
        g.push(0x7F);
        g.extend_from_slice(&[3, minor]);
        let mut mech = [0u8; 20];
        mech[..mechanism.len()].copy_from_slice(mechanism.as_bytes());
        g.extend_from_slice(&mech);
        g.push(0);
        g.extend_from_slice(&[0; 31]);
        assert_eq!(g.len(), 64);
        g
    }

    /// A ZMTP 2.0 greeting: signature, revision 1, socket type, empty identity frame.
    fn zmtp2_greeting(socket_type: u8) -> Vec<u8> {
        let mut g = vec![0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F];
        g.extend_from_slice(&[1, socket_type, 0, 0]);
        g
    }

    fn http2_opening() -> Vec<u8> {
        let mut b = HTTP2_PREFACE.to_vec();
        // An empty SETTINGS frame, which follows the preface without waiting.
        b.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        b
    }

    fn matching_inputs() -> Vec<(&'static str, Vec<u8>, Protocol)> {
        vec![
            ("ZMTP 3.0 NULL", zmtp3_greeting(0, "NULL", 1), Zmtp),
            ("ZMTP 3.1 NULL", zmtp3_greeting(1, "NULL", 1), Zmtp),
            ("ZMTP 3.0 PLAIN", zmtp3_greeting(0, "PLAIN", 1), Zmtp),
            ("ZMTP 3.1 PLAIN", zmtp3_greeting(1, "PLAIN", 1), Zmtp),
            ("ZMTP 3.0 CURVE", zmtp3_greeting(0, "CURVE", 1), Zmtp),
            ("ZMTP 3.1 CURVE", zmtp3_greeting(1, "CURVE", 1), Zmtp),
            (
                "ZMTP 3.1 routing-id padding",
                zmtp3_greeting(1, "NULL", 6),
                Zmtp,
            ),
            (
                "ZMTP 3.1 all-ones padding",
                zmtp3_greeting(1, "NULL", u64::MAX),
                Zmtp,
            ),
            ("ZMTP 2.0 PUSH", zmtp2_greeting(8), Zmtp),
            ("ZMTP 2.0 DEALER", zmtp2_greeting(5), Zmtp),
            (
                "ZMTP signature only",
                zmtp3_greeting(1, "NULL", 1)[..10].to_vec(),
                Zmtp,
            ),
            ("HTTP/2 preface", HTTP2_PREFACE.to_vec(), Http2),
            ("HTTP/2 preface + SETTINGS", http2_opening(), Http2),
        ]
    }

    #[test]
    fn complete_signatures_match() {
        for (name, bytes, protocol) in matching_inputs() {
            assert_eq!(detect(&bytes), Matched(protocol), "{name}");
        }
    }

    #[test]
    fn every_proper_prefix_of_a_signature_needs_more() {
        for (name, bytes, protocol) in matching_inputs() {
            let needed = match protocol {
                Zmtp => ZMTP_SIGNATURE_LEN,
                Http2 => HTTP2_PREFACE.len(),
            };
            for n in 0..needed {
                assert_eq!(detect(&bytes[..n]), NeedMore, "{name}, first {n} bytes");
            }
            for n in needed..=bytes.len() {
                assert_eq!(detect(&bytes[..n]), Matched(protocol), "{name}, first {n}");
            }
        }
    }

    #[test]
    fn zmtp_signature_is_matched_at_exactly_ten_bytes() {
        // The trap: libzmq sends these 10 bytes and then waits for ours.
        let sig = [0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F];
        assert_eq!(detect(&sig[..9]), NeedMore);
        assert_eq!(detect(&sig), Matched(Zmtp));
    }

    #[test]
    fn non_protocols_are_rejected() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "HTTP/1.1 GET",
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            ),
            ("HTTP/1.1 POST", b"POST /x HTTP/1.1\r\n\r\n".to_vec()),
            ("HTTP/1.1 PUT", b"PUT /x HTTP/1.1\r\n\r\n".to_vec()),
            ("HTTP/1.1 PRI-like", b"PRI * HTTP/1.1\r\n\r\n".to_vec()),
            (
                "h2c upgrade",
                b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n".to_vec(),
            ),
            (
                "TLS 1.2 ClientHello",
                vec![
                    0x16, 0x03, 0x01, 0x00, 0xC8, 0x01, 0x00, 0x00, 0xC4, 0x03, 0x03,
                ],
            ),
            (
                "TLS 1.3 ClientHello",
                vec![
                    0x16, 0x03, 0x03, 0x01, 0x00, 0x01, 0x00, 0x00, 0xFC, 0x03, 0x03,
                ],
            ),
            ("ZMTP 1.0 anonymous identity", vec![0x01, 0x00]),
            ("SSH banner", b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()),
            (
                "FF with wrong byte 9",
                vec![0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7E, 3],
            ),
            ("FF then zeroes", vec![0xFF; 12]),
            ("empty line", b"\r\n".to_vec()),
        ];
        for (name, bytes) in cases {
            assert_eq!(detect(&bytes), NoMatch, "{name}");
        }
    }

    #[test]
    fn mismatch_is_decided_at_the_first_telling_byte() {
        assert_eq!(detect(b"G"), NoMatch);
        assert_eq!(detect(b"P"), NeedMore, "could be PRI");
        assert_eq!(detect(b"PO"), NoMatch, "POST is not PRI");
        assert_eq!(detect(b"PRI * HTTP/1"), NoMatch);
        assert_eq!(detect(&[0x16]), NoMatch, "TLS record");
        assert_eq!(detect(&[0xFF]), NeedMore, "stray FF is not a match");
        assert_eq!(detect(&[0xFF, 1, 2, 3, 4, 5, 6, 7, 8]), NeedMore);
    }

    /// An independent statement of the rules, to check `detect` against on random input.
    fn oracle(b: &[u8]) -> Detection {
        if b.len() >= 10 && b[0] == 0xFF && b[9] == 0x7F {
            Matched(Zmtp)
        } else if b.starts_with(HTTP2_PREFACE) {
            Matched(Http2)
        } else if (b.first() == Some(&0xFF) && b.len() < 10) || HTTP2_PREFACE.starts_with(b) {
            NeedMore
        } else {
            NoMatch
        }
    }

    #[test]
    fn pseudo_random_and_mutated_bytes_agree_with_the_rules() {
        // xorshift: deterministic, so a failure reproduces.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds = [zmtp3_greeting(1, "NULL", 1), http2_opening()];
        for i in 0..50_000 {
            let len = (next() % 40) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 2 == 0 {
                // Start from a real signature and flip one byte, so near-misses are common.
                let seed = &seeds[(next() % 2) as usize];
                bytes = seed[..len.min(seed.len())].to_vec();
                if !bytes.is_empty() && next() % 2 == 0 {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
            }
            assert_eq!(detect(&bytes), oracle(&bytes), "{bytes:02x?}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Valid openings: ZMTP 3.x greetings with any padding, minor version and mechanism,
        /// ZMTP 2.0 greetings, and the HTTP/2 preface followed by anything; each cut to a
        /// length of at least its signature.
        fn valid_opening() -> impl Strategy<Value = (Vec<u8>, Protocol)> {
            let zmtp3 = (
                any::<u64>(),
                0u8..=1,
                prop::sample::select(vec!["NULL", "PLAIN", "CURVE"]),
                10usize..=64,
            )
                .prop_map(|(pad, minor, mech, len)| {
                    (zmtp3_greeting(minor, mech, pad)[..len].to_vec(), Zmtp)
                });
            let zmtp2 = (any::<u8>(), 10usize..=14)
                .prop_map(|(ty, len)| (zmtp2_greeting(ty)[..len].to_vec(), Zmtp));
            let h2 = prop::collection::vec(any::<u8>(), 0..64).prop_map(|tail| {
                let mut b = HTTP2_PREFACE.to_vec();
                b.extend(tail);
                (b, Http2)
            });
            prop_oneof![zmtp3, zmtp2, h2]
        }

        /// What a reader that runs the detector after every segment decides.
        fn decide_segmented(bytes: &[u8], cuts: &[prop::sample::Index]) -> Detection {
            let mut ends: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len()) + 1).collect();
            ends.push(bytes.len());
            ends.sort_unstable();
            ends.dedup();
            for end in ends {
                match detect(&bytes[..end]) {
                    NeedMore => continue,
                    decided => return decided,
                }
            }
            NeedMore
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            #[test]
            fn any_segmentation_of_a_valid_opening_reaches_the_same_match(
                (bytes, protocol) in valid_opening(),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
            ) {
                prop_assert_eq!(detect(&bytes), Matched(protocol));
                prop_assert_eq!(decide_segmented(&bytes, &cuts), Matched(protocol));
            }

            #[test]
            fn any_segmentation_of_any_bytes_agrees_with_the_whole(
                bytes in prop::collection::vec(any::<u8>(), 1..80),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
            ) {
                prop_assert_eq!(decide_segmented(&bytes, &cuts), detect(&bytes));
            }

            #[test]
            fn random_bytes_never_match_a_protocol_they_are_not(
                bytes in prop::collection::vec(any::<u8>(), 0..80),
            ) {
                match detect(&bytes) {
                    Matched(Zmtp) => prop_assert!(bytes[0] == 0xFF && bytes[9] == 0x7F),
                    Matched(Http2) => prop_assert!(bytes.starts_with(HTTP2_PREFACE)),
                    NeedMore => prop_assert!(
                        HTTP2_PREFACE.starts_with(&bytes) || (bytes[0] == 0xFF && bytes.len() < 10)
                    ),
                    NoMatch => prop_assert_eq!(oracle(&bytes), NoMatch),
                }
            }
        }
    }
}
