//! The bounded queue in front of every exporter (the audit writer and each HTTP sink): pushing
//! never waits; a full queue drops the item and counts it in `credwatch_sink_dropped_total`.

use prometheus::IntCounter;
use tokio::sync::mpsc;

/// The producer's end of a queue.
#[derive(Clone, Debug)]
pub struct Outbox<T> {
    queue: mpsc::Sender<T>,
    dropped: IntCounter,
}

impl<T> Outbox<T> {
    /// A queue with room for `capacity` items whose drops count in `dropped`; the receiver goes
    /// to the exporter (async `recv`, or `blocking_recv` on a thread of its own).
    pub fn new(capacity: usize, dropped: IntCounter) -> (Self, mpsc::Receiver<T>) {
        let (queue, receiver) = mpsc::channel(capacity);
        (Self { queue, dropped }, receiver)
    }

    /// Queues `item`, or drops and counts it when the queue is full or its exporter has ended.
    pub fn push(&self, item: T) {
        if self.queue.try_send(item).is_err() {
            self.dropped.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let dropped = IntCounter::new("dropped", "test").unwrap();
        let (outbox, mut receiver) = Outbox::new(2, dropped.clone());
        for item in 0..5 {
            outbox.push(item);
        }
        assert_eq!(dropped.get(), 3);
        assert_eq!(receiver.try_recv(), Ok(0));
        drop(receiver);
        outbox.push(9);
        assert_eq!(dropped.get(), 4, "an ended exporter counts as a drop too");
    }
}
