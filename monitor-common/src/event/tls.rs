//! uprobes on TLS libraries' write functions (`monitor-ebpf/src/tls.rs`): the start of an HTTP/1.x
//! request about to be encrypted, for the daemon to find credentials in its headers.

/// Most bytes of one write captured (a power of two; one byte less is used, see the program):
/// the request line and headers of API clients fit. A request whose headers do not end inside
/// is scanned up to its last whole header line and counted as cut.
pub const TLS_CAPTURE: usize = 4096;

/// How many bytes of a write the kernel looks at to tell a request from other data.
pub const REQUEST_HEAD: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TlsBody {
    /// Bytes captured in `TlsRecord::data`.
    pub len: u32,
    /// The kernel handle of the writer's task (0: none, `UNKNOWN_TASK`: not recorded), as for
    /// secret opens: membership as the kernel judged it, for a process whose fork the engine missed.
    pub caller_task: u32,
}

/// A TLS write record: header, body, then `len` bytes of the plaintext.
#[repr(C)]
pub struct TlsRecord {
    pub event: super::Event<TlsBody>,
    pub data: [u8; TLS_CAPTURE],
}

/// Whether a write beginning with `head` begins an HTTP/1.x request: a method and a space.
/// HTTP/2 frames (binary, after the `PRI * HTTP/2.0` preface) never match.
#[inline(always)]
pub fn begins_request(head: &[u8; REQUEST_HEAD]) -> bool {
    let word = [head[0], head[1], head[2], head[3]];
    match &word {
        b"GET " | b"PUT " => true,
        // A proxy's CONNECT carries Proxy-Authorization.
        b"CONN" => head[4] == b'E' && head[5] == b'C' && head[6] == b'T' && head[7] == b' ',
        b"POST" | b"HEAD" => head[4] == b' ',
        b"PATC" => head[4] == b'H' && head[5] == b' ',
        b"DELE" => head[4] == b'T' && head[5] == b'E' && head[6] == b' ',
        b"OPTI" => head[4] == b'O' && head[5] == b'N' && head[6] == b'S' && head[7] == b' ',
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &[u8]) -> [u8; REQUEST_HEAD] {
        let mut head = [0; REQUEST_HEAD];
        head[..text.len().min(REQUEST_HEAD)].copy_from_slice(&text[..text.len().min(REQUEST_HEAD)]);
        head
    }

    #[test]
    fn requests_are_told_from_other_writes() {
        for request in ["GET / HTTP/1.1", "POST /v1 HTTP", "PUT /x HTTP", "HEAD / HT", "PATCH /a", "DELETE /a", "OPTIONS * ", "CONNECT h:443"] {
            assert!(begins_request(&head(request.as_bytes())), "{request}");
        }
        for other in ["PRI * HTTP/2.0", "POSTAL c", "GETX", "get / HTTP", "\x16\x03\x01\x02\x00\x01\x00\x01", "DELETED ", "HEAD", "CONNECTX"] {
            assert!(!begins_request(&head(other.as_bytes())), "{other:?}");
        }
    }
}
