//! Request bodies: read with a size limit, parsed with errors that name the field at fault.

use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::{body::Body, header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::error::Rejection;

/// Largest request body accepted; task and token requests are a few hundred bytes.
pub const MAX_BODY: usize = 1 << 20;

/// Whether an error message may quote the request's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// serde's own messages, which can quote a value (`invalid type: string "abc"`).
    Allowed,
    /// The body holds a secret: messages name fields and positions, never input. Only for types
    /// without maps, whose field paths are made of the type's own field names.
    Never,
}

/// Reads the whole body, refusing more than [`MAX_BODY`] bytes with 413.
pub async fn read_body<B>(headers: &HeaderMap, body: B) -> Result<Vec<u8>, Rejection>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large =
        || Rejection::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {MAX_BODY} bytes"));
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(error) => Err(Rejection::new(StatusCode::BAD_REQUEST, format!("reading the body: {error}"))),
    }
}

/// Parses a JSON body; every failure is a 400 whose message says what and where.
pub fn parse<T: DeserializeOwned>(bytes: &[u8], echo: Echo) -> Result<T, Rejection> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| rejection(error.path().to_string(), error.inner(), echo))?;
    deserializer.end().map_err(|error| rejection(".".to_owned(), &error, echo))?;
    Ok(value)
}

fn rejection(path: String, error: &serde_json::Error, echo: Echo) -> Rejection {
    let message = without_position(error);
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => Rejection::new(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON at line {} column {}: {message}", error.line(), error.column()),
        ),
        Category::Data => {
            let (message, path) = match echo {
                Echo::Allowed => (message, Some(path)),
                Echo::Never => quiet(&message, path),
            };
            // Top-level errors (a missing field) have an empty path; serde names the field in
            // backquotes.
            let field = match path {
                Some(path) if path != "." => Some(path),
                _ => backquoted(&message).map(str::to_owned),
            };
            let text = match &field {
                Some(field) if !message.contains(&format!("`{field}`")) => format!("{field}: {message}"),
                _ => message,
            };
            let rejection = Rejection::new(StatusCode::BAD_REQUEST, text);
            match field {
                Some(field) => rejection.with_field(field),
                None => rejection,
            }
        }
    }
}

/// serde_json appends " at line L column C" to its messages; the caller places it differently.
fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    text.strip_suffix(&suffix).map_or_else(|| text.clone(), str::to_owned)
}

fn backquoted(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let length = message[start..].find('`')?;
    Some(&message[start..start + length])
}

/// A data error's message and path without any of the input. serde's messages about missing and
/// duplicate fields name only the target type's own fields; every other kind can quote input,
/// and an unknown field's path is the unknown key (which may be the secret, pasted in the wrong
/// place).
fn quiet(message: &str, path: String) -> (String, Option<String>) {
    if message.starts_with("missing field") || message.starts_with("duplicate field") {
        (message.to_owned(), Some(path))
    } else if message.starts_with("unknown field") {
        ("unknown field (not echoed: this request carries a secret)".to_owned(), None)
    } else {
        ("invalid type or value (not echoed: this request carries a secret)".to_owned(), Some(path))
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::Full;
    use hyper::body::Bytes;

    use super::*;
    use crate::daemon::control::{TaskRequest, TokenRequest};

    fn task_error(body: &str) -> Rejection {
        parse::<TaskRequest>(body.as_bytes(), Echo::Allowed).unwrap_err()
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let error = task_error("{\"id\": \"a\",\n \"ttl\": }");
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.message, "malformed JSON at line 2 column 9: expected value");
        assert_eq!(error.field, None);
        assert!(task_error("").message.starts_with("malformed JSON at line 1 column 0: EOF"));
        assert!(task_error(r#"{"id":"a"} x"#).message.contains("trailing characters"));
    }

    #[test]
    fn type_errors_name_the_field_path() {
        let error = task_error(r#"{"id": "a", "ttl": "15x"}"#);
        assert_eq!(error.field.as_deref(), Some("ttl"));
        assert_eq!(error.message, r#"ttl: "15x" has unknown unit "x"; use s, m, h or d"#);

        let error = task_error(r#"{"id": "a", "root_pid": "abc"}"#);
        assert_eq!(error.field.as_deref(), Some("root_pid"));
        assert!(
            error.message.starts_with(r#"root_pid: invalid type: string "abc", expected u32"#),
            "{}",
            error.message
        );

        let error = task_error(r#"{"id": "a", "secrets": ["/a", 7]}"#);
        assert_eq!(error.field.as_deref(), Some("secrets[1]"));
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let error = task_error(r#"{"id": "a", "rootpid": 1}"#);
        assert_eq!(error.field.as_deref(), Some("rootpid"));
        assert!(error.message.starts_with("unknown field `rootpid`, expected one of"), "{}", error.message);

        let error = task_error(r#"{"root_pid": 1}"#);
        assert_eq!(error.field.as_deref(), Some("id"));
        assert_eq!(error.message, "missing field `id`");
    }

    #[test]
    fn token_errors_never_quote_the_input() {
        let mut random = [0_u8; 8];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut random).unwrap();
        let value = format!("tok{:016x}", u64::from_ne_bytes(random));
        let bodies = [
            format!(r#"{{"task": "t", "label": "l", "value": {}}}"#, 12_345_678_901_u64),
            format!(r#"{{"task": "t", "label": "l", "{value}": "x"}}"#),
            format!(r#"{{"task": "t", "label": "l", "value": ["{value}"]}}"#),
            format!(r#"{{"task": "t", "label": "l", "value": "{value}" "x"}}"#),
            format!(r#"{{"task": "t", "label": "l", "value": "{value}"#),
            format!(r#"{{"task": "t", "label": "l", "value": "{value}", "value": "{value}"}}"#),
            format!(r#"{{"task": {{"{value}": 1}}, "label": "l", "value": "x"}}"#),
            format!(r#"["{value}"]"#),
        ];
        for body in &bodies {
            let error = parse::<TokenRequest>(body.as_bytes(), Echo::Never).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
            let leaked = error.message.contains(&value) || error.field.as_deref().is_some_and(|f| f.contains(&value));
            assert!(
                !leaked,
                "the error for body #{} quotes the token",
                bodies.iter().position(|b| b == body).unwrap_or(0)
            );
        }
        let numeric = parse::<TokenRequest>(bodies[0].as_bytes(), Echo::Never).unwrap_err();
        assert!(!numeric.message.contains("12345678901"));
        assert_eq!(numeric.field.as_deref(), Some("value"));
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused() {
        let big = Full::new(Bytes::from(vec![b' '; MAX_BODY + 1]));
        let error = read_body(&HeaderMap::new(), big).await.unwrap_err();
        assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);

        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, (MAX_BODY + 1).into());
        let error = read_body(&headers, Full::new(Bytes::new())).await.unwrap_err();
        assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);

        let exact = Full::new(Bytes::from(vec![b' '; MAX_BODY]));
        assert_eq!(read_body(&HeaderMap::new(), exact).await.unwrap().len(), MAX_BODY);
    }
}
