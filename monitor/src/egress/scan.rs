//! Credentials anywhere in a request through the proxy: every header, the path, the query string,
//! the body (up to the configured bound) and trailers read with it, as keyed fingerprints. Every
//! word is fingerprinted, without the exec scan's cap: the body bound bounds the work, and a cap
//! would let a request hide a token behind enough long words. A known value is recognised in a
//! custom header (`PRIVATE-TOKEN`), a query parameter (`?access_token=`), a JSON or form body, or
//! after an auth scheme. Values stay inside this module; copies made here are wiped when dropped.

use hyper::{header::HeaderMap, Uri};
use percent_encoding::percent_decode;
use zeroize::Zeroizing;

use crate::{
    event::CredentialSeen,
    fingerprint::FingerprintKey,
    secrets::{
        http::{auth_credentials, AUTH_HEADERS},
        tokens::words,
    },
};

/// What a request gave.
#[derive(Debug, Default)]
pub struct Scan {
    pub credentials: Vec<CredentialSeen>,
}

impl Scan {
    /// Fingerprints `value` as found in `part`, once per request.
    fn push(&mut self, part: &str, value: &[u8], key: &FingerprintKey) {
        if value.is_empty() {
            return;
        }
        let fingerprint = key.fingerprint(value);
        if self.credentials.iter().any(|seen| seen.fingerprint == fingerprint) {
            return;
        }
        self.credentials.push(CredentialSeen { header: part.to_owned(), fingerprint });
    }

    /// A value and its words, as found in `part`.
    fn push_text(&mut self, part: &str, text: &[u8], key: &FingerprintKey) {
        self.push(part, text.trim_ascii(), key);
        for word in words(text) {
            self.push(part, word, key);
        }
    }
}

/// Scans a request's headers, the path and query of `uri`, `body` (as much of it as was read)
/// and its `trailers`, when they came with it.
pub fn scan(headers: &HeaderMap, uri: &Uri, body: &[u8], trailers: Option<&HeaderMap>, key: &FingerprintKey) -> Scan {
    let mut scan = Scan::default();
    for (name, value) in headers.iter().chain(trailers.into_iter().flatten()) {
        let name = name.as_str();
        if AUTH_HEADERS.contains(&name) {
            for credential in auth_credentials(value.as_bytes()) {
                scan.push(name, &credential, key);
            }
        }
        scan.push_text(name, value.as_bytes(), key);
    }
    // Webhook URLs (`/hooks/<TOKEN>`): a token can be a path segment.
    for segment in uri.path().split('/') {
        let decoded = Zeroizing::new(percent_decode(segment.as_bytes()).collect::<Vec<u8>>());
        scan.push_text("path", &decoded, key);
    }
    if let Some(query) = uri.query() {
        scan_encoded("query", query.as_bytes(), &mut scan, key);
    }
    if !body.is_empty() {
        scan_body(headers, body, &mut scan, key);
    }
    scan
}

/// `a=b&c=d`, each name and value percent-decoded (`+` is a space in forms).
fn scan_encoded(part: &str, text: &[u8], scan: &mut Scan, key: &FingerprintKey) {
    for pair in text.split(|&byte| byte == b'&') {
        let spaced = Zeroizing::new(pair.iter().map(|&byte| if byte == b'+' { b' ' } else { byte }).collect::<Vec<u8>>());
        let decoded = Zeroizing::new(percent_decode(&spaced).collect::<Vec<u8>>());
        match decoded.iter().position(|&byte| byte == b'=') {
            Some(equals) => scan.push_text(part, &decoded[equals + 1..], key),
            None => scan.push_text(part, &decoded, key),
        }
    }
}

/// A body's words as sent, and as decoded for the encodings that hide them: a form's percent
/// escapes, a JSON string's escapes.
fn scan_body(headers: &HeaderMap, body: &[u8], scan: &mut Scan, key: &FingerprintKey) {
    for word in words(body) {
        scan.push("body", word, key);
    }
    let content_type = headers.get(hyper::header::CONTENT_TYPE).map(|value| value.as_bytes()).unwrap_or_default();
    if content_type.starts_with(b"application/x-www-form-urlencoded") {
        scan_encoded("body", body, scan, key);
    } else if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        scan_json(&json, scan, key);
    }
}

fn scan_json(value: &serde_json::Value, scan: &mut Scan, key: &FingerprintKey) {
    match value {
        serde_json::Value::String(text) => scan.push_text("body", text.as_bytes(), key),
        serde_json::Value::Array(items) => items.iter().for_each(|item| scan_json(item, scan, key)),
        serde_json::Value::Object(fields) => fields.values().for_each(|field| scan_json(field, scan, key)),
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::tests::random_key;

    const TOKEN: &str = "glpat-tokenValueThatIsLong42";

    fn found(scan: &Scan, key: &FingerprintKey, value: &str) -> Option<String> {
        let fingerprint = key.fingerprint(value.as_bytes());
        scan.credentials.iter().find(|seen| seen.fingerprint == fingerprint).map(|seen| seen.header.clone())
    }

    fn request(headers: &[(&str, &str)], uri: &str) -> (HeaderMap, Uri) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        (map, uri.parse().unwrap())
    }

    #[test]
    fn a_token_is_found_in_any_header_the_query_and_the_body() {
        let key = random_key();
        let (headers, uri) = request(&[("private-token", TOKEN)], "/api/v4/projects");
        assert_eq!(found(&scan(&headers, &uri, b"", None, &key), &key, TOKEN).as_deref(), Some("private-token"));
        let (headers, uri) = request(&[("authorization", &format!("Bearer {TOKEN}"))], "/");
        assert_eq!(found(&scan(&headers, &uri, b"", None, &key), &key, TOKEN).as_deref(), Some("authorization"));
        let encoded = TOKEN.replace('-', "%2D");
        let (headers, uri) = request(&[], &format!("/x?page=2&access_token={encoded}"));
        assert_eq!(found(&scan(&headers, &uri, b"", None, &key), &key, TOKEN).as_deref(), Some("query"));
        let (headers, uri) = request(&[("content-type", "application/json")], "/");
        let body = format!(r#"{{"auth":{{"token":"{}"}}}}"#, TOKEN.replace('-', "\\u002d"));
        assert_eq!(found(&scan(&headers, &uri, body.as_bytes(), None, &key), &key, TOKEN).as_deref(), Some("body"));
        let (headers, uri) = request(&[("content-type", "application/x-www-form-urlencoded")], "/");
        let body = format!("grant=x&secret={encoded}");
        assert_eq!(found(&scan(&headers, &uri, body.as_bytes(), None, &key), &key, TOKEN).as_deref(), Some("body"));
    }

    #[test]
    fn a_token_in_the_path_in_a_trailer_or_behind_many_words_is_found() {
        let key = random_key();
        let (headers, uri) = request(&[], &format!("/hooks/{TOKEN}"));
        assert_eq!(found(&scan(&headers, &uri, b"", None, &key), &key, TOKEN).as_deref(), Some("path"));
        let (trailers, _) = request(&[("x-late-token", TOKEN)], "/");
        let (headers, uri) = request(&[], "/");
        assert_eq!(found(&scan(&headers, &uri, b"", Some(&trailers), &key), &key, TOKEN).as_deref(), Some("x-late-token"));
        let padding: String = (0..2000).map(|word| format!("padding-word-number-{word:06} ")).collect();
        let body = format!("{padding}{TOKEN}");
        let (headers, uri) = request(&[], "/");
        assert_eq!(found(&scan(&headers, &uri, body.as_bytes(), None, &key), &key, TOKEN).as_deref(), Some("body"));
    }

    #[test]
    fn a_request_without_a_credential_gives_only_its_long_words() {
        let key = random_key();
        let (headers, uri) = request(&[("accept", "*/*")], "/?q=1");
        let scan = scan(&headers, &uri, b"{}", None, &key);
        assert!(found(&scan, &key, TOKEN).is_none());
    }
}
