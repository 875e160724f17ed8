//! Why tasks are still waiting: each PROVISIONING or DEPROVISIONING task's
//! `pending_reason`, and ECS's `cause`. Both come from the workflow event's
//! own fate (EventBridge refused it, or accepted it and has not delivered it
//! back), never from the scaling policy's CloudWatch alarm, which fails no
//! customer call.

use std::time::Duration;

use cascade_core::deps::{self, Upstream};
use cascade_core::now_ms;
use cascade_proto::ecs as pb;

use super::{Cluster, DEPROVISIONING, PROVISIONING, State, TaskEntry};

/// A workflow event EventBridge accepted this long ago (wall time) and has
/// not delivered back is overdue: far beyond a healthy dispatch tick.
pub const DELIVERY_OVERDUE: Duration = Duration::from_secs(5);

/// Where a waiting task's latest workflow event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Still in the outbox: EventBridge has not accepted it.
    Unpublished,
    /// Accepted by EventBridge this many ms ago, not delivered back.
    Undelivered(i64),
}

impl TaskEntry {
    /// Whether the task waits on a workflow event, and where that event is.
    fn waiting(&self, now_ms: i64) -> Option<Waiting> {
        let status = self.task.last_status.as_str();
        if status != PROVISIONING && status != DEPROVISIONING {
            return None;
        }
        Some(if self.queued_events > 0 || self.published_at_ms == 0 {
            Waiting::Unpublished
        } else {
            Waiting::Undelivered((now_ms - self.published_at_ms).max(0))
        })
    }

    /// Why the task is still waiting ("" when it is not).
    fn pending_reason(&self, last_outbox_error: &str, now_ms: i64) -> String {
        let eb = Upstream::EventBridge;
        match self.waiting(now_ms) {
            None => String::new(),
            Some(Waiting::Unpublished) if !last_outbox_error.is_empty() => {
                format!("workflow event not published: {last_outbox_error}")
            }
            Some(Waiting::Unpublished) => {
                format!("workflow event waiting in the outbox to be published to {eb}")
            }
            Some(Waiting::Undelivered(ms)) => format!(
                "workflow event accepted by {eb} {:.1} s ago, not yet delivered",
                ms as f64 / 1000.0
            ),
        }
    }
}

impl Cluster {
    /// The task as callers see it, with its `pending_reason`.
    pub(super) fn view(&self, s: &State, task_id: &str) -> Option<pb::Task> {
        let e = s.tasks.get(task_id)?;
        let mut task = e.task.clone();
        task.pending_reason = e.pending_reason(&s.last_outbox_error, now_ms());
        Some(task)
    }

    /// Why customer calls fail now, naming the upstream, or "": tasks stuck
    /// because EventBridge refused their workflow events (recently), or
    /// accepted them more than [`DELIVERY_OVERDUE`] ago without delivering.
    pub fn cause(&self) -> String {
        let refused = self.outbox_failure.recent();
        let s = self.lock();
        let now = now_ms();
        let overdue_ms = i64::try_from(DELIVERY_OVERDUE.as_millis()).unwrap_or(i64::MAX);
        let mut unpublished = Stuck::default();
        let mut undelivered = Stuck::default();
        for e in s.tasks.values() {
            match e.waiting(now) {
                Some(Waiting::Unpublished) => unpublished.add(&e.task.last_status, 0),
                Some(Waiting::Undelivered(ms)) if ms > overdue_ms => {
                    undelivered.add(&e.task.last_status, ms)
                }
                _ => {}
            }
        }
        let eb = Upstream::EventBridge;
        deps::join_causes([
            refused
                .filter(|_| !unpublished.is_empty())
                .map(|err| format!("{unpublished}: workflow events not published: {err}")),
            (!undelivered.is_empty()).then(|| {
                format!(
                    "{undelivered}: workflow events accepted by {eb} up to {:.1} s ago not yet delivered",
                    undelivered.oldest_ms as f64 / 1000.0
                )
            }),
        ])
    }
}

/// Tasks stuck for one reason, by state.
#[derive(Debug, Default)]
struct Stuck {
    /// Tasks in PROVISIONING.
    provisioning: usize,
    /// Tasks in DEPROVISIONING.
    deprovisioning: usize,
    /// The longest wait among them (ms).
    oldest_ms: i64,
}

impl Stuck {
    fn add(&mut self, status: &str, waited_ms: i64) {
        if status == PROVISIONING {
            self.provisioning += 1;
        } else {
            self.deprovisioning += 1;
        }
        self.oldest_ms = self.oldest_ms.max(waited_ms);
    }

    fn is_empty(&self) -> bool {
        self.provisioning + self.deprovisioning == 0
    }
}

impl std::fmt::Display for Stuck {
    /// "tasks stuck in PROVISIONING (3) and DEPROVISIONING (1)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            (PROVISIONING, self.provisioning),
            (DEPROVISIONING, self.deprovisioning),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(state, n)| format!("{state} ({n})"))
        .collect();
        write!(f, "tasks stuck in {}", parts.join(" and "))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use cascade_core::deps::CAUSE_WINDOW;
    use cascade_proto::eventbridge::{Event, EventEntry};

    use super::super::{EventPublisher, RUNNING};
    use super::*;

    /// EventBridge as ECS's client sees it; refuses while `down`.
    #[derive(Default)]
    struct Bridge {
        down: AtomicBool,
        sent: parking_lot::Mutex<Vec<EventEntry>>,
    }

    #[tonic::async_trait]
    impl EventPublisher for Bridge {
        async fn put_events(&self, entries: Vec<EventEntry>) -> Result<(), String> {
            if self.down.load(Ordering::SeqCst) {
                let s = tonic::Status::unavailable(
                    "event bus \"eventbridge-bus\": Kinesis PutRecords UNAVAILABLE: shard map unusable",
                );
                return Err(Upstream::EventBridge.describe("PutEvents", &s));
            }
            self.sent.lock().extend(entries);
            Ok(())
        }
    }

    fn reason(c: &Cluster, id: &str) -> String {
        c.describe_tasks(&[id.to_owned()]).expect("task exists")[0]
            .pending_reason
            .clone()
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_say_why_they_wait_and_the_cause_names_eventbridge_while_it_refuses() {
        let c = Cluster::new("web", "alarm", 8);
        let bridge = Bridge::default();
        let task = c.run_task("batch:1", "").expect("run");
        assert_eq!(
            task.pending_reason,
            "workflow event waiting in the outbox to be published to EventBridge"
        );
        assert_eq!(c.cause(), "", "nothing has failed yet");

        bridge.down.store(true, Ordering::SeqCst);
        assert!(c.flush_outbox(&bridge).await.is_err());
        let r = reason(&c, &task.task_id);
        assert!(
            r.starts_with(
                "workflow event not published: EventBridge PutEvents UNAVAILABLE: event bus"
            ),
            "{r}"
        );
        assert_eq!(
            c.cause(),
            "tasks stuck in PROVISIONING (1): workflow events not published: EventBridge PutEvents \
             UNAVAILABLE: event bus \"eventbridge-bus\": Kinesis PutRecords UNAVAILABLE: shard map unusable"
        );
        // No attempt since the window began: the old refusal explains nothing now.
        tokio::time::advance(CAUSE_WINDOW + Duration::from_millis(1)).await;
        assert_eq!(c.cause(), "");

        bridge.down.store(false, Ordering::SeqCst);
        assert_eq!(c.flush_outbox(&bridge).await, Ok(1));
        let r = reason(&c, &task.task_id);
        assert!(
            r.starts_with("workflow event accepted by EventBridge 0."),
            "{r}"
        );
        assert_eq!(c.cause(), "", "published just now: not overdue");

        // Accepted long ago and never delivered back: EventBridge is late.
        if let Some(e) = c.lock().tasks.get_mut(&task.task_id) {
            e.published_at_ms -= 6_000;
        }
        let cause = c.cause();
        assert!(
            cause.starts_with(
                "tasks stuck in PROVISIONING (1): workflow events accepted by EventBridge up to 6."
            ),
            "{cause}"
        );

        let sent = std::mem::take(&mut *bridge.sent.lock());
        let delivered = Event {
            source: sent[0].source.clone(),
            detail_type: sent[0].detail_type.clone(),
            detail: sent[0].detail.clone(),
            ..Default::default()
        };
        c.apply(&delivered).expect("apply");
        let shown = c
            .describe_tasks(std::slice::from_ref(&task.task_id))
            .expect("task");
        assert_eq!(shown[0].last_status, RUNNING);
        assert_eq!(shown[0].pending_reason, "");
        assert_eq!(c.cause(), "");
    }

    #[tokio::test]
    async fn a_stopped_task_waits_on_its_deprovision_event() {
        let c = Cluster::new("web", "alarm", 8);
        let bridge = Bridge::default();
        let t = c.run_task("batch:1", "").expect("run").task_id;
        c.flush_outbox(&bridge).await.expect("published");
        let stopping = c.stop_task(&t).expect("stop");
        assert_eq!(stopping.last_status, DEPROVISIONING);
        assert!(stopping.pending_reason.contains("outbox"), "{stopping:?}");
        bridge.down.store(true, Ordering::SeqCst);
        assert!(c.flush_outbox(&bridge).await.is_err());
        assert!(
            c.cause()
                .starts_with("tasks stuck in DEPROVISIONING (1): workflow events not published"),
            "{}",
            c.cause()
        );
    }
}
