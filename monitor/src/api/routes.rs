//! The task API's routes: each request becomes one [`ControlRequest`] to the daemon, or a read of
//! the findings feed.

use http_body_util::{channel::Channel, Either, Full};
use hyper::{
    body::{Body, Bytes},
    header, Method, Request, Response, StatusCode,
};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    error::Rejection,
    findings,
    json::{self, Echo},
};
use crate::daemon::{
    control::{BaselineReset, Caller, ControlMessage, ControlRequest, ResolvedHosts, TaskRequest, TokenRequest},
    feed::FindingsFeed,
};

/// A reply body: a whole JSON document, or the findings stream.
pub type ApiBody = Either<Full<Bytes>, Channel<Bytes>>;

/// What every connection shares.
pub struct State {
    pub control: mpsc::Sender<ControlMessage>,
    pub feed: FindingsFeed,
    /// Changes (closes) when the server stops; ends findings streams.
    pub stop: watch::Receiver<()>,
    /// Requests and connections refused, by reason.
    pub refused: prometheus::IntCounterVec,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    StartTask,
    ListTasks,
    EndTask(String),
    RegisterToken,
    Findings { follow: bool },
    Status,
    Baselines,
    ResetBaselines,
}

/// Answers one request from an admitted caller (or the peer check's 403).
pub async fn handle<B>(request: Request<B>, caller: Result<Caller, Rejection>, state: &State) -> Response<ApiBody>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match answer(request, caller, state).await {
        Ok(response) => response,
        Err(rejection) => {
            state.refused.with_label_values(&[super::refusal::of_status(rejection.status)]).inc();
            rejection.into_response().map(Either::Left)
        }
    }
}

async fn answer<B>(
    request: Request<B>,
    caller: Result<Caller, Rejection>,
    state: &State,
) -> Result<Response<ApiBody>, Rejection>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let caller = caller?;
    let route = route(request.method(), request.uri().path(), request.uri().query())?;
    let (parts, body) = request.into_parts();
    let reply = match route {
        Route::StartTask => {
            let request: TaskRequest = read_json(&parts.headers, body, Echo::Allowed).await?;
            let hosts = ResolvedHosts::resolve(request.allow.as_deref()).await;
            (StatusCode::CREATED, ask(state, ControlRequest::StartTask { request, caller, hosts }).await?)
        }
        Route::ListTasks => (StatusCode::OK, ask(state, ControlRequest::ListTasks).await?),
        Route::EndTask(id) => (StatusCode::OK, ask(state, ControlRequest::EndTask { id, caller }).await?),
        Route::RegisterToken => {
            let request: TokenRequest = read_json(&parts.headers, body, Echo::Never).await?;
            (StatusCode::CREATED, ask(state, ControlRequest::RegisterToken { request, caller }).await?)
        }
        Route::Status => (StatusCode::OK, ask(state, ControlRequest::Status).await?),
        Route::Baselines => (StatusCode::OK, ask(state, ControlRequest::Baselines).await?),
        Route::ResetBaselines => {
            let request: BaselineReset = read_json(&parts.headers, body, Echo::Allowed).await?;
            (StatusCode::OK, ask(state, ControlRequest::ResetBaselines { request, caller }).await?)
        }
        Route::Findings { follow } => {
            let body = if follow {
                Either::Right(findings::follow(&state.feed, state.stop.clone()))
            } else {
                Either::Left(Full::new(findings::recent(&state.feed)))
            };
            return Ok(with_type(Response::new(body), "application/x-ndjson"));
        }
    };
    let (status, value) = reply;
    let body = serde_json::to_vec(&value)
        .map_err(|error| Rejection::new(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the reply: {error}")))?;
    let mut response = with_type(Response::new(Either::Left(Full::new(Bytes::from(body)))), "application/json");
    *response.status_mut() = status;
    Ok(response)
}

pub(crate) fn route(method: &Method, path: &str, query: Option<&str>) -> Result<Route, Rejection> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let only = |allowed: &'static str, route: Route| {
        if method.as_str() == allowed {
            Ok(route)
        } else {
            Err(Rejection::method_not_allowed(method, path, allowed))
        }
    };
    match segments.as_slice() {
        ["v1", "tasks"] => match *method {
            Method::POST => Ok(Route::StartTask),
            Method::GET => Ok(Route::ListTasks),
            _ => Err(Rejection::method_not_allowed(method, path, "GET, POST")),
        },
        ["v1", "tasks", id] if !id.is_empty() => only("DELETE", Route::EndTask((*id).to_owned())),
        ["v1", "tokens"] => only("POST", Route::RegisterToken),
        ["v1", "findings"] => only("GET", Route::Findings { follow: follow(query)? }),
        ["v1", "status"] => only("GET", Route::Status),
        ["v1", "baselines"] => only("GET", Route::Baselines),
        ["v1", "baselines", "reset"] => only("POST", Route::ResetBaselines),
        _ => Err(Rejection::new(StatusCode::NOT_FOUND, format!("no such endpoint: {path}"))),
    }
}

/// `follow=1` (or `true`) asks for the live stream; other parameters are refused so a typo is seen.
fn follow(query: Option<&str>) -> Result<bool, Rejection> {
    let mut follow = false;
    for pair in query.unwrap_or_default().split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, "1"));
        let bad = |message: String| Rejection::new(StatusCode::BAD_REQUEST, message).with_field(name.to_owned());
        if name != "follow" {
            return Err(bad(format!("unknown query parameter {name:?}; the only one is follow")));
        }
        follow = match value {
            "1" | "true" => true,
            "0" | "false" => false,
            _ => return Err(bad(format!("follow: {value:?} is not 1, true, 0 or false"))),
        };
    }
    Ok(follow)
}

async fn read_json<T, B>(headers: &hyper::HeaderMap, body: B, echo: Echo) -> Result<T, Rejection>
where
    T: DeserializeOwned,
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bytes = json::read_body(headers, body).await?;
    json::parse(&bytes, echo)
}

/// Sends one request to the daemon's control loop and waits for its answer.
async fn ask(state: &State, request: ControlRequest) -> Result<serde_json::Value, Rejection> {
    let (reply, answer) = oneshot::channel();
    state.control.send(ControlMessage { request, reply }).await.map_err(|_| Rejection::unavailable())?;
    answer.await.map_err(|_| Rejection::unavailable())?.map_err(Rejection::from)
}

fn with_type<T>(mut response: Response<T>, content_type: &'static str) -> Response<T> {
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;
    use crate::daemon::control::{ControlError, ControlReply};

    const ROOT: Caller = Caller { pid: 1, uid: 0, gid: 0 };

    #[test]
    fn routes_by_method_and_path() {
        assert_eq!(route(&Method::POST, "/v1/tasks", None), Ok(Route::StartTask));
        assert_eq!(route(&Method::GET, "/v1/tasks", None), Ok(Route::ListTasks));
        assert_eq!(route(&Method::DELETE, "/v1/tasks/build-7", None), Ok(Route::EndTask("build-7".into())));
        assert_eq!(route(&Method::POST, "/v1/tokens", None), Ok(Route::RegisterToken));
        assert_eq!(route(&Method::GET, "/v1/findings", None), Ok(Route::Findings { follow: false }));
        assert_eq!(route(&Method::GET, "/v1/findings", Some("follow=1")), Ok(Route::Findings { follow: true }));
        assert_eq!(route(&Method::GET, "/v1/status", None), Ok(Route::Status));

        assert_eq!(route(&Method::GET, "/v1/nope", None).unwrap_err().status, StatusCode::NOT_FOUND);
        assert_eq!(route(&Method::DELETE, "/v1/tasks/", None).unwrap_err().status, StatusCode::NOT_FOUND);
        assert_eq!(route(&Method::DELETE, "/v1/tasks/a/b", None).unwrap_err().status, StatusCode::NOT_FOUND);
        let wrong = route(&Method::DELETE, "/v1/tasks", None).unwrap_err();
        assert_eq!((wrong.status, wrong.allow), (StatusCode::METHOD_NOT_ALLOWED, Some("GET, POST")));
        assert_eq!(route(&Method::GET, "/v1/tasks/x", None).unwrap_err().allow, Some("DELETE"));
        let typo = route(&Method::GET, "/v1/findings", Some("folow=1")).unwrap_err();
        assert_eq!((typo.status, typo.field.as_deref()), (StatusCode::BAD_REQUEST, Some("folow")));
    }

    /// A control loop that answers every request with `reply`, or no loop at all.
    fn state(reply: Option<fn() -> ControlReply>) -> (State, watch::Sender<()>) {
        let (control, mut requests) = mpsc::channel::<ControlMessage>(1);
        if let Some(reply) = reply {
            tokio::spawn(async move {
                while let Some(message) = requests.recv().await {
                    let _ = message.reply.send(reply());
                }
            });
        }
        let (stop, stopped) = watch::channel(());
        (State { control, feed: FindingsFeed::default(), stop: stopped, refused: crate::daemon::metrics::Metrics::default().api_refused }, stop)
    }

    async fn call(state: &State, method: Method, path: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let request =
            Request::builder().method(method).uri(path).body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let response = handle(request, Ok(ROOT), state).await;
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn replies_carry_the_daemons_answer_and_status() {
        let (state, _stop) = state(Some(|| Ok(serde_json::json!({"id": "t"}))));
        assert_eq!(
            call(&state, Method::POST, "/v1/tasks", r#"{"id":"t"}"#).await,
            (StatusCode::CREATED, serde_json::json!({"id": "t"}))
        );
        assert_eq!(call(&state, Method::DELETE, "/v1/tasks/t", "").await.0, StatusCode::OK);
        let (status, body) = call(&state, Method::POST, "/v1/tasks", r#"{"id":"t","ttl":"15x"}"#).await;
        assert_eq!((status, &body["field"]), (StatusCode::BAD_REQUEST, &serde_json::json!("ttl")));
    }

    #[tokio::test]
    async fn daemon_refusals_keep_their_status() {
        let (state, _stop) = state(Some(|| Err(ControlError::Forbidden("pid 1 is in task a".into()))));
        let (status, body) = call(&state, Method::GET, "/v1/status", "").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"], "forbidden: pid 1 is in task a");
    }

    #[tokio::test]
    async fn a_closed_control_channel_is_503() {
        let (state, _stop) = state(None);
        let (status, body) = call(&state, Method::GET, "/v1/tasks", "").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body["error"].as_str().unwrap().contains("not accepting"));
    }

    #[tokio::test]
    async fn a_refused_peer_gets_the_peer_checks_403() {
        let (state, _stop) = state(Some(|| Ok(serde_json::Value::Null)));
        let request = Request::builder().uri("/v1/status").body(Full::new(Bytes::new())).unwrap();
        let refusal = Rejection::new(StatusCode::FORBIDDEN, "uid 65534 may not");
        assert_eq!(handle(request, Err(refusal), &state).await.status(), StatusCode::FORBIDDEN);
    }
}
