//! The socket and its accept loop: one HTTP/1 connection per client, each admitted or refused by
//! its peer credentials before any request is read.

use std::{
    convert::Infallible,
    io,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use hyper::{server::conn::http1, service::service_fn};
use prometheus::IntCounterVec;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::{mpsc, watch, Semaphore},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use super::{
    error::{ApiError, Rejection},
    peer::{Allowlist, Peer},
    refusal,
    routes::{self, State},
    ApiConfig,
};
use crate::daemon::{control::ControlMessage, feed::FindingsFeed};

/// A client that has not sent its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; past this a new one gets a 503 and is closed, so that a flood of
/// clients cannot exhaust the daemon's memory or descriptors.
pub const MAX_CONNECTIONS: usize = 256;
/// What a connection past [`MAX_CONNECTIONS`] is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The running server. Dropping it (or [`ApiServer::shutdown`]) stops serving, ends open
/// connections and findings streams, and removes the socket file.
pub struct ApiServer {
    socket: PathBuf,
    stop: Option<watch::Sender<()>>,
    accept: Option<JoinHandle<()>>,
}

impl ApiServer {
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops serving and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        self.stop.take();
        if let Some(accept) = self.accept.take() {
            // The loop only ends; a panic in it has already been reported by tokio.
            let _ = accept.await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.take();
        if let Err(error) = std::fs::remove_file(&self.socket) {
            if error.kind() != io::ErrorKind::NotFound {
                warn!(socket = %self.socket.display(), %error, "removing the task API socket");
            }
        }
    }
}

/// Binds the socket (mode 0600) and serves the task API until the returned handle is dropped.
/// Every refusal is counted in `refused` by reason (`credwatch_api_refused_total`).
pub async fn serve(
    config: &ApiConfig,
    control: mpsc::Sender<ControlMessage>,
    feed: FindingsFeed,
    refused: IntCounterVec,
) -> Result<ApiServer, ApiError> {
    let ApiConfig { socket, allow_uids, allow_gids } = config;
    let listener = bind(socket)?;
    // The series exist at 0 from the start, so that the first refusal counts as an increase.
    for reason in refusal::ALL {
        refused.with_label_values(&[reason]);
    }
    let (stop, stopped) = watch::channel(());
    let state = Arc::new(State { control, feed, stop: stopped.clone(), refused });
    let allowlist = Arc::new(Allowlist { uids: allow_uids.clone(), gids: allow_gids.clone() });
    let accept = tokio::spawn(accept_loop(listener, state, allowlist, stopped));
    info!(socket = %socket.display(), "task API listening");
    Ok(ApiServer { socket: socket.clone(), stop: Some(stop), accept: Some(accept) })
}

fn bind(socket: &Path) -> Result<UnixListener, ApiError> {
    if let Some(parent) = socket.parent().filter(|parent| !parent.as_os_str().is_empty() && !parent.exists()) {
        let create_error = |source| ApiError::CreateDir { path: parent.to_owned(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(parent).map_err(create_error)?;
        // The mode given to mkdir is reduced by the umask.
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).map_err(create_error)?;
    }
    remove_stale(socket)?;
    let listener = UnixListener::bind(socket).map_err(|source| ApiError::Bind { path: socket.to_owned(), source })?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|source| ApiError::Permissions { path: socket.to_owned(), source })?;
    Ok(listener)
}

/// A socket file left by a daemon that died is removed; one with a live listener is not.
fn remove_stale(socket: &Path) -> Result<(), ApiError> {
    let metadata = match std::fs::symlink_metadata(socket) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(ApiError::Probe { path: socket.to_owned(), source }),
    };
    if !metadata.file_type().is_socket() {
        return Err(ApiError::NotASocket { path: socket.to_owned() });
    }
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => Err(ApiError::InUse { path: socket.to_owned() }),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(socket).map_err(|source| ApiError::RemoveStale { path: socket.to_owned(), source })
        }
        Err(source) => Err(ApiError::Probe { path: socket.to_owned(), source }),
    }
}

async fn accept_loop(
    listener: UnixListener,
    state: Arc<State>,
    allowlist: Arc<Allowlist>,
    mut stop: watch::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((stream, _)) => match Arc::clone(&slots).try_acquire_owned() {
                Ok(slot) => {
                    let (state, allowlist, stop) = (Arc::clone(&state), Arc::clone(&allowlist), stop.clone());
                    tokio::spawn(async move {
                        connection(stream, state, allowlist, stop).await;
                        drop(slot);
                    });
                }
                Err(_) => {
                    state.refused.with_label_values(&[refusal::CONNECTIONS]).inc();
                    // Best effort: a client that does not read is closed all the same.
                    let _ = stream.try_write(BUSY);
                }
            },
            Err(error) => {
                warn!(%error, "accepting a task API connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, state: Arc<State>, allowlist: Arc<Allowlist>, mut stop: watch::Receiver<()>) {
    let state_refused = state.refused.clone();
    let caller = match Peer::of(&stream, &allowlist) {
        Ok(peer) => {
            let caller = allowlist.admit(&peer);
            if caller.is_err() {
                warn!(uid = peer.uid, gid = peer.gid, pid = peer.pid, "task API connection refused: not allowlisted");
            }
            caller
        }
        Err(error) => Err(Rejection::new(
            hyper::StatusCode::FORBIDDEN,
            format!("the peer's credentials could not be read: {error}"),
        )),
    };
    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let state = Arc::clone(&state);
        let caller = caller.clone();
        async move {
            let (method, path) = (request.method().clone(), request.uri().path().to_owned());
            let peer = caller.as_ref().ok().copied();
            let response = routes::handle(request, caller, &state).await;
            debug!(%method, path, status = response.status().as_u16(), pid = peer.map(|c| c.pid), uid = peer.map(|c| c.uid), "task API request");
            Ok::<_, Infallible>(response)
        }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    let refused = state_refused;
    tokio::select! {
        result = served => {
            if let Err(error) = result {
                let reason = if error.is_timeout() { refusal::HEADER_TIMEOUT } else if error.is_parse() { refusal::BAD_HTTP } else { refusal::CONNECTION_ERROR };
                refused.with_label_values(&[reason]).inc();
                debug!(%error, "task API connection ended with an error");
            }
        }
        _ = stop.changed() => {}
    }
}
