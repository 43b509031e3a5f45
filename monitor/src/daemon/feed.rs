//! Findings as JSON lines for API clients: the most recent ones, and a live subscription.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use tokio::sync::broadcast;

/// How many findings `GET /v1/findings` can return without `follow`.
const RECENT: usize = 1000;
/// A follower that falls this far behind loses the oldest lines (and is told how many).
const FOLLOW_BUFFER: usize = 1024;

/// Shared between the daemon (publisher) and the API server (readers). Cheap to clone.
#[derive(Clone)]
pub struct FindingsFeed {
    recent: Arc<Mutex<VecDeque<Arc<str>>>>,
    live: broadcast::Sender<Arc<str>>,
}

impl Default for FindingsFeed {
    fn default() -> Self {
        Self { recent: Default::default(), live: broadcast::channel(FOLLOW_BUFFER).0 }
    }
}

impl FindingsFeed {
    /// Publishes one finding, already serialized as a JSON object without a trailing newline.
    pub fn publish(&self, line: Arc<str>) {
        let mut recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(Arc::clone(&line));
        // No receiver is not an error: nobody is following.
        let _ = self.live.send(line);
    }

    /// Up to the last 1000 findings, oldest first.
    pub fn recent(&self) -> Vec<Arc<str>> {
        self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect()
    }

    /// Findings published from now on. A lagging receiver gets `RecvError::Lagged(n)`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.live.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_thousand_and_feeds_subscribers() {
        let feed = FindingsFeed::default();
        let mut follower = feed.subscribe();
        for index in 0..1005 {
            feed.publish(Arc::from(format!("{{\"n\":{index}}}")));
        }
        let recent = feed.recent();
        assert_eq!(recent.len(), 1000);
        assert_eq!(&*recent[0], "{\"n\":5}");
        assert!(matches!(follower.try_recv(), Ok(line) if &*line == "{\"n\":0}"));
    }
}
