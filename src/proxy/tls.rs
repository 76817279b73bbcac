//! TLS ClientHello inspection (RFC 8446 §4.1.2): enough to route a TLS connection by the
//! server name (SNI) and the application protocols (ALPN) it asks for, without terminating
//! TLS. Pure, like the detector: bytes in, a verdict out.
//!
//! The whole ClientHello record is needed (SNI and ALPN are extensions near its end), and it
//! may arrive over several segments, so the caller keeps reading while this says
//! [`Hello::NeedMore`]. A ClientHello split over several TLS records is not supported and
//! reported as [`Hello::NotTls`]: real clients send it in one record.

/// Largest TLS record: 2^14 bytes of payload plus the 5-byte header.
pub const MAX_RECORD: usize = 5 + (1 << 14);

/// What a ClientHello asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// The server name, lower-cased.
    pub sni: Option<String>,
    /// Protocols offered, e.g. `h2`, `http/1.1`.
    pub alpn: Vec<String>,
}

impl ClientHello {
    /// `sni=… alpn=[…]` for a log line, capped so a hostile hello cannot flood the log.
    pub fn describe(&self) -> String {
        const MAX: usize = 200;
        let mut s = format!(
            "sni={} alpn=[{}]",
            self.sni.as_deref().unwrap_or("-"),
            self.alpn.join(",")
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

pub fn parse(buf: &[u8]) -> Hello {
    if buf.len() < 5 {
        return if starts_like_tls(buf) {
            Hello::NeedMore
        } else {
            Hello::NotTls
        };
    }
    if !starts_like_tls(buf) {
        return Hello::NotTls;
    }
    let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if len == 0 || 5 + len > MAX_RECORD {
        return Hello::NotTls;
    }
    if buf.len() < 5 + len {
        return Hello::NeedMore;
    }
    match client_hello(&buf[5..5 + len]) {
        Some(hello) => Hello::Parsed(hello),
        None => Hello::NotTls,
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
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize)
    }
    /// A length-prefixed sub-slice, as a reader of its own.
    fn vec8(&mut self) -> Option<Reader<'a>> {
        let n = self.u8()?;
        self.take(n).map(Reader)
    }
    fn vec16(&mut self) -> Option<Reader<'a>> {
        let n = self.u16()?;
        self.take(n).map(Reader)
    }
}

fn client_hello(handshake: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(handshake);
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    let len = r.u24()?;
    let mut body = Reader(r.take(len)?);
    body.take(2 + 32)?; // legacy_version, random
    body.vec8()?; // legacy_session_id
    body.vec16()?; // cipher_suites
    body.vec8()?; // legacy_compression_methods
    let mut hello = ClientHello::default();
    if body.0.is_empty() {
        return Some(hello); // no extensions at all
    }
    let mut extensions = body.vec16()?;
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let mut data = extensions.vec16()?;
        match kind {
            0 => {
                // server_name: a list of (type, name); type 0 is host_name.
                let mut names = data.vec16()?;
                while !names.0.is_empty() {
                    let name_type = names.u8()?;
                    let name = names.vec16()?;
                    if name_type == 0 {
                        hello.sni = Some(String::from_utf8_lossy(name.0).to_ascii_lowercase());
                    }
                }
            }
            16 => {
                // application_layer_protocol_negotiation: a list of length-prefixed names.
                let mut protocols = data.vec16()?;
                while !protocols.0.is_empty() {
                    let p = protocols.vec8()?;
                    hello.alpn.push(String::from_utf8_lossy(p.0).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

#[cfg(test)]
mod tests;
