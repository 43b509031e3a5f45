//! The machinery every HTTP sink shares (Alertmanager, the generic webhook, the revocation
//! webhook): a worker that takes batches from the sink's bounded [`Outbox`] and POSTs them,
//! retrying with backoff. What a sink sends is its [`Payload`].

use std::time::Duration;

use hyper::{body::Bytes, StatusCode};
use prometheus::IntCounter;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::{debug, warn};

use super::{
    backoff::Backoff,
    http::{post_json, Endpoint, PostError},
    queue::Outbox,
};
use crate::daemon::metrics::Metrics;

/// Attempts per batch before it is given up on: about half a minute of retries.
pub const ATTEMPTS: u32 = 8;

/// What one sink sends.
pub trait Payload: Send + Sync + 'static {
    type Item: Send + 'static;

    /// The `sink` label of its metrics, e.g. `alertmanager`.
    const NAME: &'static str;
    /// Most items per request.
    const MAX_BATCH: usize;

    /// The JSON request body for `batch` (never empty, at most `MAX_BATCH` items).
    fn body(&self, batch: &[Self::Item]) -> Vec<u8>;

    /// Hears how a batch ended, once it was delivered or given up on.
    fn settled(&self, _batch: &[Self::Item], _outcome: &Outcome) {}
}

/// How a batch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        attempts: u32,
    },
    /// Refused with a status that retrying cannot change, or every attempt failed.
    Failed {
        attempts: u32,
        error: String,
    },
}

/// Starts the worker of a sink with room for `capacity` waiting items. It ends once the
/// [`Outbox`] is dropped and the queue is empty; after `stop` fires it no longer waits between
/// attempts, so that shutdown is quick.
pub fn start<P: Payload>(
    payload: P,
    endpoint: Endpoint,
    capacity: usize,
    metrics: &Metrics,
    stop: watch::Receiver<()>,
) -> (Outbox<P::Item>, JoinHandle<()>) {
    let dropped = metrics.sink_dropped.with_label_values(&[P::NAME]);
    let (outbox, receiver) = Outbox::new(capacity, dropped.clone());
    let sent = metrics.sink_sent.with_label_values(&[P::NAME]);
    let worker = Worker { payload, endpoint, sent, dropped, stop, stopping: false };
    (outbox, tokio::spawn(worker.run(receiver)))
}

struct Worker<P> {
    payload: P,
    endpoint: Endpoint,
    sent: IntCounter,
    dropped: IntCounter,
    stop: watch::Receiver<()>,
    /// The daemon is stopping: one attempt per batch, no more pauses.
    stopping: bool,
}

impl<P: Payload> Worker<P> {
    async fn run(mut self, mut queue: mpsc::Receiver<P::Item>) {
        let mut batch = Vec::with_capacity(P::MAX_BATCH);
        while queue.recv_many(&mut batch, P::MAX_BATCH).await > 0 {
            let body = Bytes::from(self.payload.body(&batch));
            let outcome = self.deliver(body).await;
            match &outcome {
                Outcome::Delivered { attempts } => {
                    debug!(sink = P::NAME, items = batch.len(), attempts, "delivered");
                    self.sent.inc_by(batch.len() as u64);
                }
                Outcome::Failed { attempts, error } => {
                    warn!(sink = P::NAME, endpoint = %self.endpoint, items = batch.len(), attempts, %error, "giving up on a delivery");
                    self.dropped.inc_by(batch.len() as u64);
                }
            }
            self.payload.settled(&batch, &outcome);
            batch.clear();
        }
    }

    async fn deliver(&mut self, body: Bytes) -> Outcome {
        let mut backoff = Backoff::default();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match post_json(&self.endpoint, body.clone()).await {
                Ok(reply) if reply.status.is_success() => return Outcome::Delivered { attempts },
                Ok(reply) => {
                    let error = format!("HTTP {}: {}", reply.status.as_u16(), reply.body);
                    if !worth_retrying(reply.status) {
                        return Outcome::Failed { attempts, error };
                    }
                    error
                }
                Err(error) => chain(&error),
            };
            // A closed channel means the exporters are gone: stopping too.
            self.stopping |= self.stop.has_changed().unwrap_or(true);
            if attempts == ATTEMPTS || self.stopping {
                return Outcome::Failed { attempts, error };
            }
            debug!(sink = P::NAME, attempts, %error, "delivery failed; retrying");
            self.pause(backoff.next_pause()).await;
        }
    }

    /// Sleeps, or returns early when the daemon stops.
    async fn pause(&mut self, pause: Duration) {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = self.stop.changed() => self.stopping = true,
        }
    }
}

/// 408 (timeout), 429 (rate limit) and server errors may pass on a later attempt; any other
/// refusal would be refused again.
fn worth_retrying(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

fn chain(error: &PostError) -> String {
    crate::error_chain::ErrorChain(error).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::{io::AsyncReadExt as _, io::AsyncWriteExt as _, net::TcpListener};

    use super::*;

    /// Sends each item as a JSON number and remembers the outcomes.
    #[derive(Default)]
    struct Numbers {
        outcomes: Mutex<Vec<(Vec<u32>, Outcome)>>,
    }

    impl Payload for Arc<Numbers> {
        type Item = u32;
        const NAME: &'static str = "test";
        const MAX_BATCH: usize = 4;

        fn body(&self, batch: &[u32]) -> Vec<u8> {
            serde_json::to_vec(batch).unwrap()
        }

        fn settled(&self, batch: &[u32], outcome: &Outcome) {
            let outcome = match outcome {
                Outcome::Delivered { attempts } => Outcome::Delivered { attempts: *attempts },
                Outcome::Failed { attempts, error } => Outcome::Failed { attempts: *attempts, error: error.clone() },
            };
            self.outcomes.lock().unwrap().push((batch.to_vec(), outcome));
        }
    }

    /// Answers each request with the next status of `statuses`, returning the bodies it read.
    async fn server(statuses: Vec<u16>) -> (Endpoint, JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::parse(&format!("http://{}/hook", listener.local_addr().unwrap())).unwrap();
        let serve = tokio::spawn(async move {
            let mut bodies = Vec::new();
            for status in statuses {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buffer = [0; 4096];
                // Enough for these tests: read until the body announced by Content-Length is in.
                loop {
                    let read = stream.read(&mut buffer).await.unwrap();
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|line| {
                                line.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned)
                            })
                            .and_then(|value| value.parse().ok())
                            .unwrap_or(0);
                        if body.len() >= length {
                            bodies.push(body.to_owned());
                            break;
                        }
                    }
                }
                let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno");
                stream.write_all(reply.as_bytes()).await.unwrap();
            }
            bodies
        });
        (endpoint, serve)
    }

    #[tokio::test]
    async fn a_server_error_is_retried_and_a_refusal_is_not() {
        let metrics = Metrics::default();
        let numbers = Arc::new(Numbers::default());
        let (endpoint, serve) = server(vec![503, 200, 400]).await;
        let (_stop, stopped) = watch::channel(());
        let (outbox, worker) = start(Arc::clone(&numbers), endpoint, 16, &metrics, stopped);
        outbox.push(1);
        outbox.push(2);
        // The retry comes after at most 1.25 × 250 ms.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        outbox.push(3);
        drop(outbox);
        worker.await.unwrap();
        assert_eq!(serve.await.unwrap(), ["[1,2]", "[1,2]", "[3]"]);
        let outcomes = numbers.outcomes.lock().unwrap();
        assert_eq!(outcomes[0], (vec![1, 2], Outcome::Delivered { attempts: 2 }));
        assert_eq!(outcomes[1], (vec![3], Outcome::Failed { attempts: 1, error: "HTTP 400: no".to_owned() }));
        assert_eq!(metrics.sink_sent.with_label_values(&["test"]).get(), 2);
        assert_eq!(metrics.sink_dropped.with_label_values(&["test"]).get(), 1);
    }

    // Paused time skips the half minute of backoff; a refused loopback connect needs no timer.
    #[tokio::test(start_paused = true)]
    async fn a_dead_endpoint_is_given_up_on_and_a_full_queue_drops_without_waiting() {
        let metrics = Metrics::default();
        let numbers = Arc::new(Numbers::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = Endpoint::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        drop(listener);
        let (_stop, stopped) = watch::channel(());
        let (outbox, worker) = start(Arc::clone(&numbers), endpoint, 2, &metrics, stopped);
        for item in 0..100 {
            outbox.push(item);
        }
        // Two wait in the queue; the worker may have taken the first ones out already.
        let dropped_at_once = metrics.sink_dropped.with_label_values(&["test"]).get();
        assert!(dropped_at_once >= 100 - 2 - <Arc<Numbers> as Payload>::MAX_BATCH as u64, "{dropped_at_once}");
        drop(outbox);
        worker.await.unwrap();
        assert_eq!(metrics.sink_dropped.with_label_values(&["test"]).get(), 100);
        assert_eq!(metrics.sink_sent.with_label_values(&["test"]).get(), 0);
        let outcomes = numbers.outcomes.lock().unwrap();
        assert!(outcomes.iter().all(|(_, outcome)| matches!(outcome, Outcome::Failed { attempts: ATTEMPTS, .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_during_a_pause_ends_the_retries() {
        let metrics = Metrics::default();
        let numbers = Arc::new(Numbers::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = Endpoint::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        drop(listener);
        let (stop, stopped) = watch::channel(());
        let (outbox, worker) = start(Arc::clone(&numbers), endpoint, 2, &metrics, stopped);
        outbox.push(1);
        outbox.push(2);
        // Past the first attempt and into the first pause (at most 1.25 × 250 ms).
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send_replace(());
        drop(outbox);
        worker.await.unwrap();
        let outcomes = numbers.outcomes.lock().unwrap();
        assert!(
            outcomes.iter().all(|(_, outcome)| matches!(outcome, Outcome::Failed { attempts: 1 | 2, .. })),
            "{outcomes:?}"
        );
    }

    #[tokio::test]
    async fn after_stop_a_failing_batch_gets_one_attempt() {
        let metrics = Metrics::default();
        let numbers = Arc::new(Numbers::default());
        let (endpoint, serve) = server(vec![503]).await;
        let (stop, stopped) = watch::channel(());
        stop.send_replace(());
        let (outbox, worker) = start(Arc::clone(&numbers), endpoint, 2, &metrics, stopped);
        outbox.push(7);
        drop(outbox);
        worker.await.unwrap();
        serve.await.unwrap();
        assert!(matches!(numbers.outcomes.lock().unwrap()[0].1, Outcome::Failed { attempts: 1, .. }));
    }
}
