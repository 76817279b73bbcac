//! Property tests: no input makes `parse` panic, and neither TCP segmentation nor the way a
//! client cuts its hello into records changes the verdict.

use super::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// A DNS host name of LDH labels, in mixed case.
fn host_name() -> impl Strategy<Value = String> {
    vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?", 1..5).prop_map(|labels| labels.join("."))
}

/// A valid ClientHello message, and what `parse` must make of it.
fn valid_hello() -> impl Strategy<Value = (Vec<u8>, ClientHello)> {
    let protocols = vec("[a-z0-9/.-]{1,12}", 0..24);
    (
        proptest::option::of(host_name()),
        protocols,
        0..600usize,
        any::<bool>(),
    )
        .prop_map(|(sni, protocols, padding, reversed)| {
            let mut extensions = vec![extension(0x0015, &vec![0; padding])];
            if let Some(name) = &sni {
                extensions.push(server_name(name.as_bytes()));
            }
            if !protocols.is_empty() {
                extensions.push(alpn(&protocols));
            }
            if reversed {
                extensions.reverse();
            }
            let want = ClientHello {
                sni: sni.map(|s| s.to_ascii_lowercase()),
                alpn: protocols.into_iter().take(MAX_ALPN).collect(),
            };
            (message(&extensions), want)
        })
}

/// Record payload sizes a client might pick: tiny, middling, or the largest allowed.
fn fragment_sizes() -> impl Strategy<Value = Vec<usize>> {
    let size = prop_oneof![1..=8usize, 1..=600usize, Just(MAX_FRAGMENT)];
    vec(size, 1..8)
}

/// `message` cut into handshake records of these payload sizes, taken in turn.
fn split(message: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = message;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).min(rest.len()));
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend(vec16(chunk));
        rest = tail;
    }
    out
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in vec(any::<u8>(), 0..4096)) {
        let verdict = parse(&bytes);
        prop_assert!(verdict != Hello::NeedMore || bytes.len() < MAX_HELLO_BYTES);
    }

    /// Random bytes rarely get past the record header; a damaged valid hello goes deep.
    #[test]
    fn parse_never_panics_on_a_damaged_hello(
        (message, _) in valid_hello(),
        sizes in fragment_sizes(),
        edits in vec((any::<Index>(), any::<u8>()), 1..6),
        cut in any::<Index>(),
    ) {
        let mut bytes = split(&message, &sizes);
        for (at, byte) in edits {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        let bytes = &bytes[..cut.index(bytes.len() + 1)];
        let verdict = parse(bytes);
        prop_assert!(verdict != Hello::NeedMore || bytes.len() < MAX_HELLO_BYTES);
    }

    #[test]
    fn every_prefix_needs_more_and_the_whole_parses((message, want) in valid_hello()) {
        let bytes = records(&message, MAX_FRAGMENT);
        for n in 1..bytes.len() {
            prop_assert_eq!(parse(&bytes[..n]), Hello::NeedMore, "{} bytes", n);
        }
        prop_assert_eq!(parse(&bytes), Hello::Parsed(want));
    }

    #[test]
    fn any_record_split_gives_the_same_answer(
        (message, want) in valid_hello(),
        sizes in fragment_sizes(),
        cut in any::<Index>(),
    ) {
        let bytes = split(&message, &sizes);
        prop_assert_eq!(parse(&bytes), Hello::Parsed(want));
        let n = 1 + cut.index(bytes.len() - 1);
        prop_assert_eq!(parse(&bytes[..n]), Hello::NeedMore, "{} bytes", n);
    }
}
