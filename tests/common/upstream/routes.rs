//! The upstream's routes: `ok` for any path, and the three kinds of response that a proxy can get
//! wrong in its own way: a server-sent event stream (must not be buffered), a WebSocket (an
//! upgraded connection) and a gRPC call (HTTP/2 trailers).

use std::{
    convert::Infallible,
    future::ready,
    sync::Arc,
    time::{Duration, SystemTime},
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use http_body_util::{channel::Channel, combinators::BoxBody, BodyExt as _, Empty, Full};
use hyper::{
    body::{Bytes, Incoming},
    header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HOST, UPGRADE},
    http::request::Parts,
    HeaderMap, Request, Response, StatusCode, Version,
};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::{Record, RecordedRequest};

type Body = BoxBody<Bytes, Infallible>;

pub(super) async fn handle(request: Request<Incoming>, record: Arc<Record>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    if parts.uri.path() == "/ws" {
        return Ok(websocket(parts, &record));
    }
    let Ok(body) = body.collect().await.map(|collected| collected.to_bytes()) else {
        return Ok(text(StatusCode::BAD_REQUEST, "the request body did not arrive whole"));
    };
    record.push_request(recorded(&parts, body.to_vec()));
    Ok(match parts.uri.path() {
        "/sse" => sse(parts.uri.query()),
        "/grpc.Echo/Say" => grpc_echo(body),
        _ => text(StatusCode::OK, "ok"),
    })
}

fn recorded(parts: &Parts, body: Vec<u8>) -> RecordedRequest {
    let authority = parts.uri.authority().map(|authority| authority.as_str().to_owned());
    let host = parts.headers.get(HOST).map(|host| String::from_utf8_lossy(host.as_bytes()).into_owned());
    RecordedRequest {
        method: parts.method.to_string(),
        target: parts.uri.path_and_query().map_or_else(|| "/".to_owned(), |target| target.as_str().to_owned()),
        protocol: protocol(parts.version),
        authority: host.or(authority),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect(),
        body,
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/3",
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *response.status_mut() = status;
    response
}

/// `/sse?n=N&gap_ms=M`: N events `data: <i> <unix micros when sent>`, M ms apart, each handed to
/// the connection on its own, so that a client can tell how late each one arrived.
fn sse(query: Option<&str>) -> Response<Body> {
    let (Some(count), Some(gap_ms)) = (query_number(query, "n"), query_number(query, "gap_ms")) else {
        return text(StatusCode::BAD_REQUEST, "/sse needs ?n=EVENTS&gap_ms=MILLISECONDS");
    };
    // Room for one event: the next is made (and timestamped) only once the body took this one.
    let (mut sender, body) = Channel::<Bytes, Infallible>::new(1);
    tokio::spawn(async move {
        for index in 0..count {
            if index > 0 {
                tokio::time::sleep(Duration::from_millis(gap_ms)).await;
            }
            let event = format!("data: {index} {}\n\n", unix_micros());
            // The client went away: nobody to send the rest to.
            if sender.send_data(Bytes::from(event)).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(body.boxed());
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn query_number(query: Option<&str>, name: &str) -> Option<u64> {
    query?.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

fn unix_micros() -> u128 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_micros()
}

/// `/grpc.Echo/Say`: a unary gRPC reply whose message is the request's, with the status in the
/// trailers as gRPC has it (a proxy that drops trailers fails the call).
fn grpc_echo(request: Bytes) -> Response<Body> {
    // One message, framed: a compression flag (0, none), a big-endian u32 length, the bytes.
    let well_formed = request.len() >= 5
        && request[0] == 0
        && u32::from_be_bytes([request[1], request[2], request[3], request[4]]) as usize == request.len() - 5;
    let (message, status) = if well_formed { (request, "0") } else { (Bytes::new(), "3") };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(status));
    let body = Full::new(message).with_trailers(ready(Some(Ok(trailers))));
    let mut response = Response::new(body.boxed());
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

/// The GUID that RFC 6455 appends to the client's key for `Sec-WebSocket-Accept`.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `/ws`: the HTTP/1.1 WebSocket handshake, then an echo of every message on the upgraded
/// connection.
fn websocket(parts: Parts, record: &Arc<Record>) -> Response<Body> {
    record.push_request(recorded(&parts, Vec::new()));
    let upgrade = parts.headers.get(UPGRADE).is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let (true, Some(key)) = (upgrade, parts.headers.get("sec-websocket-key")) else {
        return text(StatusCode::BAD_REQUEST, "/ws needs a WebSocket upgrade");
    };
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        &[key.as_bytes(), WEBSOCKET_GUID.as_bytes()].concat(),
    );
    let accept = HeaderValue::from_str(&STANDARD.encode(digest)).unwrap();
    let upgraded = hyper::upgrade::on(Request::from_parts(parts, ()));
    let record = Arc::clone(record);
    tokio::spawn(async move {
        // A failed upgrade or a broken echo ends the connection: the client sees it.
        if let Ok(upgraded) = upgraded.await {
            let _ = echo(TokioIo::new(upgraded), &record).await;
        }
    });
    let mut response = Response::new(Empty::new().boxed());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("upgrade"));
    response.headers_mut().insert(UPGRADE, HeaderValue::from_static("websocket"));
    response.headers_mut().insert("sec-websocket-accept", accept);
    response
}

const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// More than any test sends; a larger length is a framing error, not a message to allocate for.
const MAX_PAYLOAD: u64 = 1 << 20;

/// Echoes each frame as it came (FIN bit and opcode kept, so fragments echo as fragments),
/// answers a ping with a pong and a close with a close.
async fn echo(mut io: impl AsyncRead + AsyncWrite + Unpin, record: &Record) -> std::io::Result<()> {
    loop {
        let (first, payload) = read_frame(&mut io).await?;
        record.push_message(payload.clone());
        match first & 0x0f {
            OP_PONG => {}
            OP_PING => write_frame(&mut io, 0x80 | OP_PONG, &payload).await?,
            OP_CLOSE => return write_frame(&mut io, first, &payload).await,
            _ => write_frame(&mut io, first, &payload).await?,
        }
    }
}

/// A client frame: its first byte and its payload, unmasked.
async fn read_frame(io: &mut (impl AsyncRead + Unpin)) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    io.read_exact(&mut head).await?;
    let length = match head[1] & 0x7f {
        126 => u64::from(io.read_u16().await?),
        127 => io.read_u64().await?,
        short => u64::from(short),
    };
    if length > MAX_PAYLOAD {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "WebSocket frame too large"));
    }
    let mut mask = [0u8; 4];
    if head[1] & 0x80 != 0 {
        io.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; length as usize];
    io.read_exact(&mut payload).await?;
    for (index, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[index % 4];
    }
    Ok((head[0], payload))
}

/// A server frame: unmasked, as RFC 6455 has them.
async fn write_frame(io: &mut (impl AsyncWrite + Unpin), first: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut frame = vec![first];
    match payload.len() {
        short @ 0..=125 => frame.push(short as u8),
        medium @ 126..=0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(medium as u16).to_be_bytes());
        }
        long => {
            frame.push(127);
            frame.extend_from_slice(&(long as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    io.write_all(&frame).await?;
    io.flush().await
}
