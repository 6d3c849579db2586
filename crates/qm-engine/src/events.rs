//! The event hub: numbered events, kept in a ring for clients that resume with `?since=`,
//! and broadcast to live subscribers. Events are published only once the change they describe
//! is durable.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use qm_proto::EventDoc;
use tokio::sync::broadcast;

/// How many past events a client can resume from.
pub const RING: usize = 10_000;

/// Numbers, keeps and broadcasts events.
#[derive(Debug)]
pub struct EventHub {
    inner: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    next_id: u64,
    events: VecDeque<Arc<EventDoc>>,
    /// None once closed: live feeds end.
    tx: Option<broadcast::Sender<Arc<EventDoc>>>,
}

/// A subscription: the backlog after `since`, whether some of it is gone, and the live feed.
#[derive(Debug)]
pub struct Subscription {
    pub backlog: Vec<Arc<EventDoc>>,
    /// Events after `since` that the ring no longer holds (the client missed them).
    pub missed: bool,
    pub live: broadcast::Receiver<Arc<EventDoc>>,
}

impl EventHub {
    /// A hub numbering from `first_id` (the start time in microseconds keeps ids rising across
    /// restarts).
    pub fn new(first_id: u64) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            inner: Mutex::new(Ring {
                next_id: first_id.max(1),
                events: VecDeque::new(),
                tx: Some(tx),
            }),
        }
    }

    /// Numbers and publishes `events`.
    pub fn publish(&self, events: Vec<EventDoc>) {
        let Ok(mut ring) = self.inner.lock() else {
            return;
        };
        for mut e in events {
            e.id = ring.next_id;
            ring.next_id += 1;
            let e = Arc::new(e);
            if ring.events.len() == RING {
                ring.events.pop_front();
            }
            ring.events.push_back(Arc::clone(&e));
            // No subscribers is fine.
            if let Some(tx) = &ring.tx {
                let _ = tx.send(e);
            }
        }
    }

    /// Ends every live feed (at shutdown, so open streams do not hold the server up).
    pub fn close(&self) {
        if let Ok(mut ring) = self.inner.lock() {
            ring.tx = None;
        }
    }

    /// Subscribes, with the kept events after `since` (all kept ones without it).
    pub fn subscribe(&self, since: Option<u64>) -> Subscription {
        let ring = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Subscribe under the lock, so nothing falls between backlog and live feed.
        let live = match &ring.tx {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1,
        };
        let since = since.unwrap_or(0);
        let backlog: Vec<_> = ring
            .events
            .iter()
            .filter(|e| e.id > since)
            .cloned()
            .collect();
        let oldest = ring.events.front().map_or(ring.next_id, |e| e.id);
        let missed = since > 0 && since + 1 < oldest && since < ring.next_id;
        Subscription {
            backlog,
            missed,
            live,
        }
    }
}

/// The monitor publishes `pressure.changed` and `alert.*` through the hub.
impl qm_monitor::EventSink for EventHub {
    fn publish(&self, events: Vec<EventDoc>) {
        EventHub::publish(self, events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str) -> EventDoc {
        EventDoc {
            id: 0,
            kind: kind.to_owned(),
            at: String::new(),
            allocation: None,
            agent: None,
            pool: None,
            node: None,
            preempted: None,
            preempted_by: None,
            reason: None,
            alert: None,
        }
    }

    #[test]
    fn resumes_after_an_id_and_says_when_events_were_missed() {
        let hub = EventHub::new(100);
        hub.publish(vec![ev("a"), ev("b"), ev("c")]);
        let s = hub.subscribe(Some(100));
        assert_eq!(
            s.backlog
                .iter()
                .map(|e| e.kind.as_str())
                .collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert!(!s.missed);
        let mut live = hub.subscribe(Some(102)).live;
        hub.publish(vec![ev("d")]);
        assert_eq!(live.try_recv().map(|e| e.id).ok(), Some(103));
        for _ in 0..RING {
            hub.publish(vec![ev("x")]);
        }
        assert!(hub.subscribe(Some(100)).missed);
        assert_eq!(hub.subscribe(None).backlog.len(), RING);
    }
}
