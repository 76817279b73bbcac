//! TLS ClientHello inspection (RFC 8446 §4.1.2): enough to route a TLS connection by the
//! server name (SNI) and the application protocols (ALPN) it asks for, without terminating
//! TLS. Pure, like the detector: bytes in, a verdict out.
//!
//! The whole ClientHello message is needed (SNI and ALPN are extensions near its end). It
//! may arrive over several TCP segments and, legally, over several handshake records (RFC
//! 8446 §5.1: a handshake message may span records), so [`parse`] reassembles it from
//! consecutive records of content type 22 and says [`Hello::NeedMore`] until it is whole.
//!
//! This runs for every TLS client before any route is chosen, so everything it buffers,
//! keeps or logs is bounded:
//! - at most [`MAX_HELLO_BYTES`] are buffered: a ClientHello of up to [`MAX_HANDSHAKE`]
//!   (16 KiB, its 4-byte header included) plus the headers of up to 64 records. A hello not
//!   whole within that is refused; `parse` never says `NeedMore` for that many bytes. Real
//!   hellos are 0.2–2 KiB (a post-quantum key share included), in one record.
//! - at most [`MAX_ALPN`] (16) protocol names are kept, in the client's order; later ones are
//!   checked and dropped. Clients offer two or three, preference first (`h2`, `http/1.1`), so
//!   a route on `h2` still matches, and a hostile hello cannot make the proxy hold or log
//!   thousands. [`ClientHello::describe`] caps and escapes the log text as well.
//! - the SNI must be a DNS host name (RFC 1035/1123: LDH labels of 1–63 bytes, at most 253
//!   bytes in all); it is kept lower-cased, without a trailing dot, so routes compare plain
//!   names and logs carry no control bytes.
//!
//! Anything malformed is [`Hello::NotTls`], the proxy routing only what it understands: a
//! length that overruns or leaves bytes over, an empty ALPN list or name (RFC 7301), an SNI
//! that is not a host name or two of them (RFC 6066 §3), the same extension twice (RFC 8446
//! §4.2), an empty or oversized record, or a record in the middle that is not a TLS 3.x
//! handshake record.

/// Largest TLS record payload (RFC 8446 §5.1).
pub const MAX_FRAGMENT: usize = 1 << 14;

/// Largest ClientHello message accepted, its 4-byte handshake header included.
pub const MAX_HANDSHAKE: usize = 1 << 14;

/// Most bytes [`parse`] looks at: a [`MAX_HANDSHAKE`] message plus 64 record headers.
pub const MAX_HELLO_BYTES: usize = MAX_HANDSHAKE + 64 * RECORD_HEADER;

/// Most ALPN protocol names kept from one hello.
pub const MAX_ALPN: usize = 16;

/// Content type, legacy version (2 bytes), payload length (2 bytes).
const RECORD_HEADER: usize = 5;
const HANDSHAKE_HEADER: usize = 4;
const CLIENT_HELLO: u8 = 1;
const SERVER_NAME: u16 = 0;
const ALPN: u16 = 16;
const HOST_NAME: u8 = 0;

/// What a ClientHello asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// The server name: a DNS host name, lower-cased, without a trailing dot.
    pub sni: Option<String>,
    /// Protocols offered, e.g. `h2`, `http/1.1`: the first [`MAX_ALPN`], in the client's order.
    pub alpn: Vec<String>,
}

impl ClientHello {
    /// `sni=… alpn=[…]` for a log line, escaped and capped so a hostile hello cannot flood
    /// or forge the log.
    pub fn describe(&self) -> String {
        const MAX: usize = 200;
        let alpn: Vec<String> = self
            .alpn
            .iter()
            .map(|p| p.escape_debug().collect())
            .collect();
        let mut s = format!(
            "sni={} alpn=[{}]",
            self.sni.as_deref().unwrap_or("-"),
            alpn.join(",")
        );
        if s.len() > MAX {
            let mut end = MAX;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push('…');
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    NeedMore,
    NotTls,
    Parsed(ClientHello),
}

/// True if these bytes can start a TLS handshake record (type 22, version 3.x).
pub fn starts_like_tls(prefix: &[u8]) -> bool {
    match prefix {
        [] => false,
        [0x16] | [0x16, 0x03] => true,
        [0x16, 0x03, minor, ..] => *minor <= 0x04,
        _ => false,
    }
}

/// The verdict on the first bytes of a connection; only the first [`MAX_HELLO_BYTES`] count.
pub fn parse(buf: &[u8]) -> Hello {
    if !starts_like_tls(buf) {
        return Hello::NotTls;
    }
    match handshake_message(buf) {
        Ok(message) => client_hello(&message).map_or(Hello::NotTls, Hello::Parsed),
        Err(verdict) => verdict,
    }
}

/// The handshake message carried by the records that start `buf`, copied out of them once
/// it is whole. Bytes after it (the rest of its record, later records) are not looked at.
fn handshake_message(buf: &[u8]) -> Result<Vec<u8>, Hello> {
    let buf = &buf[..buf.len().min(MAX_HELLO_BYTES)];
    let mut rest = buf;
    let mut fragments: Vec<&[u8]> = Vec::new();
    let mut received = 0;
    loop {
        if let Some(len) = message_len(&fragments)? {
            if received >= len {
                let mut message = fragments.concat();
                message.truncate(len);
                return Ok(message);
            }
        }
        match next_fragment(&mut rest)? {
            Some(fragment) => {
                received += fragment.len();
                fragments.push(fragment);
            }
            None if buf.len() < MAX_HELLO_BYTES => return Err(Hello::NeedMore),
            None => return Err(Hello::NotTls),
        }
    }
}

/// Splits the next record off `rest` and returns its payload, or as much of it as is there;
/// `None` when not even its header is whole.
fn next_fragment<'a>(rest: &mut &'a [u8]) -> Result<Option<&'a [u8]>, Hello> {
    if rest.is_empty() {
        return Ok(None);
    }
    if !starts_like_tls(rest) {
        return Err(Hello::NotTls);
    }
    if rest.len() < RECORD_HEADER {
        return Ok(None);
    }
    let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
    if len == 0 || len > MAX_FRAGMENT {
        return Err(Hello::NotTls); // empty handshake records are forbidden (RFC 8446 §5.1)
    }
    let end = (RECORD_HEADER + len).min(rest.len());
    let fragment = &rest[RECORD_HEADER..end];
    *rest = &rest[end..];
    Ok(Some(fragment))
}

/// The length of the whole handshake message, header included, once its header is in (its
/// 4 bytes may themselves be spread over records).
fn message_len(fragments: &[&[u8]]) -> Result<Option<usize>, Hello> {
    let mut header = [0u8; HANDSHAKE_HEADER];
    let mut have = 0;
    for (slot, byte) in header
        .iter_mut()
        .zip(fragments.iter().flat_map(|f| f.iter()))
    {
        *slot = *byte;
        have += 1;
    }
    match (have, header) {
        (0, _) => Ok(None),
        (_, [kind, ..]) if kind != CLIENT_HELLO => Err(Hello::NotTls),
        (HANDSHAKE_HEADER, [_, a, b, c]) => {
            let len = HANDSHAKE_HEADER + u32::from_be_bytes([0, a, b, c]) as usize;
            if len > MAX_HANDSHAKE {
                return Err(Hello::NotTls);
            }
            Ok(Some(len))
        }
        _ => Ok(None),
    }
}

/// A cursor over a byte slice that returns None on any overrun.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize)
    }
    /// A length-prefixed sub-slice, as a reader of its own.
    fn vec8(&mut self) -> Option<Reader<'a>> {
        let n = self.u8()? as usize;
        self.take(n).map(Reader)
    }
    fn vec16(&mut self) -> Option<Reader<'a>> {
        let n = self.u16()? as usize;
        self.take(n).map(Reader)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// `Some` if every byte was read: a structure with bytes over is malformed.
    fn end(&self) -> Option<()> {
        self.is_empty().then_some(())
    }
}

/// The SNI and ALPN of a whole ClientHello message; `None` if it is malformed.
fn client_hello(message: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(message);
    if r.u8()? != CLIENT_HELLO {
        return None;
    }
    let len = r.u24()?;
    let mut body = Reader(r.take(len)?);
    body.take(2 + 32)?; // legacy_version, random
    body.vec8()?; // legacy_session_id
    body.vec16()?; // cipher_suites
    body.vec8()?; // legacy_compression_methods
    if body.is_empty() {
        return Some(ClientHello::default()); // no extensions at all
    }
    let mut extensions = body.vec16()?;
    body.end()?;
    let mut hello = ClientHello::default();
    let mut seen = Vec::new();
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        seen.push(kind);
        match kind {
            SERVER_NAME => hello.sni = server_name(data)?,
            ALPN => hello.alpn = alpn(data)?,
            _ => {}
        }
    }
    // RFC 8446 §4.2: no extension type twice. Sorted, a duplicate sits next to its twin.
    seen.sort_unstable();
    if seen.windows(2).any(|pair| pair[0] == pair[1]) {
        return None;
    }
    Some(hello)
}

/// server_name (RFC 6066 §3): a non-empty list of (type, name). Only host_name (type 0)
/// counts, at most once. `Some(None)`: a valid list with no host name in it.
fn server_name(mut data: Reader<'_>) -> Option<Option<String>> {
    let mut names = data.vec16()?;
    data.end()?;
    if names.is_empty() {
        return None;
    }
    let mut host = None;
    while !names.is_empty() {
        let name_type = names.u8()?;
        let name = names.vec16()?;
        if name_type == HOST_NAME {
            if host.is_some() {
                return None;
            }
            host = Some(host_name(name.0)?);
        }
    }
    Some(host)
}

/// A DNS host name (RFC 1035 §2.3.1 as relaxed by RFC 1123 §2.1: labels of letters, digits
/// and inner hyphens, 1–63 bytes each, 253 bytes in all), lower-cased, trailing dot dropped.
fn host_name(raw: &[u8]) -> Option<String> {
    let name = raw.strip_suffix(b".").unwrap_or(raw);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let ldh_label = |label: &[u8]| {
        (1..=63).contains(&label.len())
            && label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && label.first() != Some(&b'-')
            && label.last() != Some(&b'-')
    };
    if !name.split(|b| *b == b'.').all(ldh_label) {
        return None;
    }
    String::from_utf8(name.to_ascii_lowercase()).ok()
}

/// application_layer_protocol_negotiation (RFC 7301 §3.1): a non-empty list of non-empty
/// names. All are checked; the first [`MAX_ALPN`] are kept.
fn alpn(mut data: Reader<'_>) -> Option<Vec<String>> {
    let mut names = data.vec16()?;
    data.end()?;
    if names.is_empty() {
        return None;
    }
    let mut kept = Vec::new();
    while !names.is_empty() {
        let name = names.vec8()?;
        if name.is_empty() {
            return None;
        }
        if kept.len() < MAX_ALPN {
            kept.push(String::from_utf8_lossy(name.0).into_owned());
        }
    }
    Some(kept)
}

#[cfg(test)]
mod tests;
