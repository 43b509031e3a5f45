//! Credentials in the head of an HTTP/1.x request, as the TLS uprobes captured it in plaintext:
//! the values of credential-bearing headers, as keyed fingerprints, and the request's `Host`.
//! Values stay inside this module; the captured bytes are the caller's, wiped by it, and every
//! copy made here (a decoded Basic credential, a completed head) is wiped when dropped.

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::{event::CredentialSeen, fingerprint::FingerprintKey};

/// Headers whose whole value, or the credentials after an auth scheme, is a credential. Names are
/// compared without case, as HTTP does.
pub const AUTH_HEADERS: [&str; 2] = ["authorization", "proxy-authorization"];
const KEY_HEADERS: [&str; 2] = ["x-api-key", "x-auth-token"];
/// Most header lines read; a request with more is scanned as unreadable.
const MAX_HEADERS: usize = 128;

/// `[tls]`: the uprobes on TLS libraries' write functions, and what is looked for in requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    pub enabled: bool,
    /// Cookies that carry credentials (session cookies of internal APIs), by name.
    pub cookies: Vec<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self { enabled: true, cookies: Vec::new() }
    }
}

/// What a request head gave.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestScan {
    /// The `Host` header as sent.
    pub server: Option<String>,
    pub credentials: Vec<CredentialSeen>,
    /// The head did not end inside the capture: the whole header lines before the cut were read.
    pub cut: bool,
    /// Not an HTTP/1.x request head (or more than [`MAX_HEADERS`] headers): nothing was read.
    pub unreadable: bool,
}

/// Scans the captured start of a request. `cookies` names the cookies that carry credentials.
pub fn scan(captured: &[u8], cookies: &[String], key: &FingerprintKey) -> RequestScan {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let completed;
    let (parsed, cut) = match request.parse(captured) {
        Ok(httparse::Status::Complete(_)) => (Ok(()), false),
        Ok(httparse::Status::Partial) => {
            // Cut inside the head: end it after its last whole line (CRLF or a bare LF, which
            // httparse takes too), so that the headers before the cut are read.
            let Some(end) = captured.iter().rposition(|&byte| byte == b'\n') else {
                return RequestScan { cut: true, unreadable: true, ..RequestScan::default() };
            };
            completed = Zeroizing::new([&captured[..=end], b"\r\n"].concat());
            request = httparse::Request::new(&mut headers);
            let parsed = match request.parse(&completed) {
                Ok(httparse::Status::Complete(_)) => Ok(()),
                Ok(httparse::Status::Partial) | Err(_) => Err(()),
            };
            (parsed, true)
        }
        Err(_) => (Err(()), false),
    };
    if parsed.is_err() {
        return RequestScan { cut, unreadable: true, ..RequestScan::default() };
    }
    let mut scan = RequestScan { cut, ..RequestScan::default() };
    for header in request.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        let value = header.value;
        if name == "host" {
            scan.server = std::str::from_utf8(value).ok().map(|host| host.trim().to_owned());
        } else if AUTH_HEADERS.contains(&name.as_str()) {
            for credential in auth_credentials(value) {
                scan.push(&name, &credential, key);
            }
        } else if KEY_HEADERS.contains(&name.as_str()) {
            scan.push(&name, value.trim_ascii(), key);
        } else if name == "cookie" {
            for pair in value.split(|&byte| byte == b';') {
                let pair = pair.trim_ascii();
                let Some(equals) = pair.iter().position(|&byte| byte == b'=') else { continue };
                if cookies.iter().any(|cookie| cookie.as_bytes() == &pair[..equals]) {
                    scan.push(&name, &pair[equals + 1..], key);
                }
            }
        }
    }
    scan
}

impl RequestScan {
    fn push(&mut self, header: &str, value: &[u8], key: &FingerprintKey) {
        if value.is_empty() {
            return;
        }
        let fingerprint = key.fingerprint(value);
        if !self.credentials.iter().any(|seen| seen.fingerprint == fingerprint) {
            self.credentials.push(CredentialSeen { header: header.to_owned(), fingerprint });
        }
    }
}

/// The credentials of an `Authorization` value: the whole value (a bare token), what follows the
/// scheme (`Bearer X`, `token X`), and for `Basic` the decoded `user:password` and its password
/// (git and many APIs take a token as the password).
pub fn auth_credentials(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let value = value.trim_ascii();
    let mut out = vec![Zeroizing::new(value.to_vec())];
    let Some(space) = value.iter().position(|&byte| byte == b' ') else { return out };
    let (scheme, rest) = (&value[..space], value[space + 1..].trim_ascii());
    out.push(Zeroizing::new(rest.to_vec()));
    if scheme.eq_ignore_ascii_case(b"basic") {
        if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) {
            let decoded = Zeroizing::new(decoded);
            if let Some(colon) = decoded.iter().position(|&byte| byte == b':') {
                out.push(Zeroizing::new(decoded[colon + 1..].to_vec()));
            }
            out.push(decoded);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::tests::random_key;

    const TOKEN: &str = "ghp_tokenValueThatIsLong42";

    fn fingerprints(scan: &RequestScan) -> Vec<(&str, crate::event::Fingerprint)> {
        scan.credentials.iter().map(|seen| (seen.header.as_str(), seen.fingerprint)).collect()
    }

    #[test]
    fn bearer_tokens_api_keys_and_named_cookies_are_found() {
        let key = random_key();
        let head = format!(
            "POST /v1/x HTTP/1.1\r\nHost: api.example.com:8443\r\nAuthorization: Bearer {TOKEN}\r\n\
             X-Api-Key: k3y\r\nCookie: theme=dark; session=s3ssion\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        let scan = scan(head.as_bytes(), &["session".to_owned()], &key);
        assert_eq!(scan.server.as_deref(), Some("api.example.com:8443"));
        assert!(!scan.cut && !scan.unreadable);
        let found = fingerprints(&scan);
        let token = key.fingerprint(TOKEN.as_bytes());
        assert!(found.contains(&("authorization", token)), "{found:?}");
        assert!(found.contains(&("x-api-key", key.fingerprint(b"k3y"))));
        assert!(found.contains(&("cookie", key.fingerprint(b"s3ssion"))), "{found:?}");
        assert!(!found.iter().any(|&(_, fingerprint)| fingerprint == key.fingerprint(b"dark")), "an unnamed cookie");
    }

    #[test]
    fn a_token_as_the_password_of_basic_credentials_is_found() {
        let key = random_key();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"));
        let head = format!("GET /repo.git/info/refs HTTP/1.1\r\nhost: github.com\r\nauthorization: Basic {basic}\r\n\r\n");
        let scan = scan(head.as_bytes(), &[], &key);
        assert!(fingerprints(&scan).contains(&("authorization", key.fingerprint(TOKEN.as_bytes()))));
    }

    #[test]
    fn a_head_cut_by_the_capture_is_read_up_to_its_last_whole_line() {
        let key = random_key();
        let head = format!("GET / HTTP/1.1\r\nAuthorization: token {TOKEN}\r\nUser-Agent: cur");
        let scan = scan(head.as_bytes(), &[], &key);
        assert!(scan.cut && !scan.unreadable);
        assert!(fingerprints(&scan).contains(&("authorization", key.fingerprint(TOKEN.as_bytes()))));
        let bare_lf = format!("GET / HTTP/1.1\nAuthorization: token {TOKEN}\nUser-Agent: cur");
        let scan = super::scan(bare_lf.as_bytes(), &[], &key);
        assert!(scan.cut && !scan.unreadable, "{scan:?}");
        assert!(fingerprints(&scan).contains(&("authorization", key.fingerprint(TOKEN.as_bytes()))));
        let twice = format!("GET / HTTP/1.1\r\nX-Auth-Token: {TOKEN}\r\nX-Api-Key: {TOKEN}\r\n\r\n");
        assert_eq!(super::scan(twice.as_bytes(), &[], &key).credentials.len(), 1, "the same value is listed once");
        let cut_in_request_line = super::scan(b"GET /very/long/pa", &[], &key);
        assert!(cut_in_request_line.cut && cut_in_request_line.unreadable);
    }

    #[test]
    fn what_is_not_a_request_head_is_unreadable() {
        let key = random_key();
        for garbage in [&b"GET \x00\x01 nonsense\r\n\r\n"[..], b"POST / HTTP/1.1\r\nBad Header\r\n\r\n"] {
            let scan = scan(garbage, &[], &key);
            assert!(scan.unreadable && scan.credentials.is_empty(), "{garbage:?}");
        }
    }
}
