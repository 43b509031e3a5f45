//! `GET /v1/findings`: the recent findings as JSON lines, then with `follow` the live ones.

use std::sync::Arc;

use http_body_util::channel::Channel;
use hyper::body::Bytes;
use tokio::sync::{broadcast::error::RecvError, watch};

use crate::daemon::feed::FindingsFeed;

/// Lines queued for a follower's connection before it counts as lagging.
const FOLLOW_QUEUE: usize = 64;

/// The recent findings, one per line.
pub fn recent(feed: &FindingsFeed) -> Bytes {
    let mut text = String::new();
    for line in feed.recent() {
        text.push_str(&line);
        text.push('\n');
    }
    Bytes::from(text)
}

/// The recent findings, then each new one as it is published, until the client goes away or the
/// server stops. A follower too slow for the feed gets `{"lagged": N}` for the N lines it lost.
pub fn follow(feed: &FindingsFeed, mut stop: watch::Receiver<()>) -> Channel<Bytes> {
    // Subscribe before reading the recent ones so that nothing published in between is lost.
    let mut live = feed.subscribe();
    let recent = feed.recent();
    let (mut sender, body) = Channel::new(FOLLOW_QUEUE);
    tokio::spawn(async move {
        for line in &recent {
            if sender.send_data(as_line(line)).await.is_err() {
                return;
            }
        }
        // Lines published between the subscription and the snapshot arrive here again; the
        // feed hands out the same `Arc` to both, so they are recognised by address.
        let mut already_sent = recent;
        loop {
            let next = tokio::select! {
                next = live.recv() => next,
                _ = stop.changed() => return,
            };
            let bytes = match next {
                Ok(line) => {
                    if already_sent.iter().rev().any(|sent| Arc::ptr_eq(sent, &line)) {
                        continue;
                    }
                    already_sent = Vec::new();
                    as_line(&line)
                }
                Err(RecvError::Lagged(lost)) => Bytes::from(format!("{{\"lagged\":{lost}}}\n")),
                Err(RecvError::Closed) => return,
            };
            if sender.send_data(bytes).await.is_err() {
                return;
            }
        }
    });
    body
}

fn as_line(line: &str) -> Bytes {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    async fn next_line(body: &mut Channel<Bytes>) -> String {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame()).await.unwrap();
        String::from_utf8(frame.unwrap().unwrap().into_data().unwrap().to_vec()).unwrap()
    }

    #[test]
    fn recent_is_one_line_per_finding() {
        let feed = FindingsFeed::default();
        assert!(recent(&feed).is_empty());
        feed.publish(Arc::from(r#"{"n":1}"#));
        feed.publish(Arc::from(r#"{"n":2}"#));
        assert_eq!(&recent(&feed)[..], b"{\"n\":1}\n{\"n\":2}\n");
    }

    #[tokio::test]
    async fn follow_sends_recent_then_live_lines_once() {
        let feed = FindingsFeed::default();
        feed.publish(Arc::from(r#"{"n":1}"#));
        let (_stop, stopped) = watch::channel(());
        let mut body = follow(&feed, stopped);
        feed.publish(Arc::from(r#"{"n":2}"#));
        assert_eq!(next_line(&mut body).await, "{\"n\":1}\n");
        assert_eq!(next_line(&mut body).await, "{\"n\":2}\n");
    }

    #[tokio::test]
    async fn a_lagging_follower_is_told_how_many_it_lost() {
        let feed = FindingsFeed::default();
        let (_stop, stopped) = watch::channel(());
        let mut body = follow(&feed, stopped);
        // More than the feed's and the connection's buffers hold, with nobody reading.
        for index in 0..(1024 + FOLLOW_QUEUE + 100) {
            feed.publish(Arc::from(format!("{{\"n\":{index}}}")));
        }
        let mut lines = Vec::new();
        while !lines.iter().any(|line: &String| line.starts_with("{\"lagged\":")) {
            lines.push(next_line(&mut body).await);
        }
        assert!(lines.len() <= FOLLOW_QUEUE + 2, "{} lines before the lag notice", lines.len());
    }

    #[tokio::test]
    async fn stopping_the_server_ends_the_stream() {
        let feed = FindingsFeed::default();
        let (stop, stopped) = watch::channel(());
        let mut body = follow(&feed, stopped);
        drop(stop);
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame()).await.unwrap();
        assert!(end.is_none());
    }
}
