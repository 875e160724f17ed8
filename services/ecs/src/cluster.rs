//! The ECS control plane's state: tasks whose provisioning and de-provisioning
//! advance only when the EventBridge event driving them is delivered, the
//! outbox those events leave through, and the one auto-scaled service. In the
//! incident EventBridge stalled, so tasks stayed PROVISIONING/DEPROVISIONING.

mod pending;

use std::collections::{BTreeMap, VecDeque};

use cascade_core::deps::RecentFailure;
use cascade_core::{ServiceError, now_ms};
use cascade_proto::ecs as pb;
use cascade_proto::eventbridge::{Event, EventEntry};
use parking_lot::{Mutex, MutexGuard};
use serde::{Deserialize, Serialize};

use crate::scaling;

pub use pending::DELIVERY_OVERDUE;

/// Source of the workflow events ECS publishes.
pub const WORKFLOW_SOURCE: &str = "aws.ecs";
/// Detail-type of the workflow events ECS publishes.
pub const WORKFLOW_DETAIL_TYPE: &str = "ECS Task Workflow";
/// Entries per PutEvents call (EventBridge's limit).
const OUTBOX_BATCH: usize = 10;
/// PutEvents calls the outbox keeps in flight at once. Publishing one
/// batch at a time ties the outbox's throughput to one round trip through
/// EventBridge and Kinesis; a backlog worked off that way outlasts the
/// outage by hours.
const OUTBOX_IN_FLIGHT: usize = 4;
/// Stopped tasks kept for DescribeTasks; older ones are forgotten.
const STOPPED_KEPT: usize = 1_000;
/// Scaling decisions kept for DescribeServices.
const DECISIONS_KEPT: usize = 100;

/// Task states, as ECS names them.
pub const PROVISIONING: &str = "PROVISIONING";
/// See [`PROVISIONING`].
pub const RUNNING: &str = "RUNNING";
/// See [`PROVISIONING`].
pub const DEPROVISIONING: &str = "DEPROVISIONING";
/// See [`PROVISIONING`].
pub const STOPPED: &str = "STOPPED";

/// Which step of the workflow an event drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    /// PROVISIONING -> RUNNING.
    Provision,
    /// DEPROVISIONING -> STOPPED.
    Deprovision,
}

/// The `detail` JSON of a workflow event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowDetail {
    /// The task the event is about.
    pub task_id: String,
    /// The step it drives.
    pub transition: Transition,
}

impl WorkflowDetail {
    /// The event, stamped with when the transition was requested: the
    /// outbox may take long to get it accepted, and that wait is part of
    /// its delivery delay.
    fn entry(&self) -> EventEntry {
        EventEntry {
            source: WORKFLOW_SOURCE.into(),
            detail_type: WORKFLOW_DETAIL_TYPE.into(),
            detail: serde_json::to_string(self).expect("two plain fields always encode"),
            time_ms: now_ms(),
        }
    }
}

/// Sends workflow events to EventBridge. The real one calls PutEvents over
/// gRPC; tests use an in-process fake.
#[tonic::async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes `entries` (at most 10); an error means none were accepted.
    async fn put_events(&self, entries: Vec<EventEntry>) -> Result<(), String>;
}

/// What applying a delivered event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The task moved to its next state.
    Advanced,
    /// The task was not in the state this event moves from (a duplicate, or
    /// a provision event for a task stopped meanwhile): nothing changed.
    Unchanged,
}

#[derive(Debug)]
struct TaskEntry {
    /// Creation order: scale-in stops the newest first.
    seq: u64,
    /// The task as DescribeTasks shows it (its `pending_reason` is filled in
    /// when shown, see [`Cluster::view`]).
    task: pb::Task,
    /// Its workflow events still in the outbox.
    queued_events: u32,
    /// When EventBridge accepted its latest workflow event (ms; 0 = never).
    published_at_ms: i64,
}

#[derive(Debug, Default)]
struct State {
    /// Task id -> task.
    tasks: BTreeMap<String, TaskEntry>,
    next_seq: u64,
    /// Workflow events not yet accepted by EventBridge, oldest first, each
    /// with the task it drives.
    outbox: VecDeque<(String, EventEntry)>,
    /// Why the last publish failed ("" since one succeeded).
    last_outbox_error: String,
    desired: u32,
    decisions: VecDeque<pb::ScalingDecision>,
    last_alarm_state: String,
    no_decisions: u64,
    scale_outs: u64,
    outbox_errors: u64,
    events_published: u64,
    transitions_applied: u64,
    unchanged_deliveries: u64,
    /// Wall ms from RunTask to RUNNING of the most recently started task.
    last_provision_ms: i64,
}

/// Gauges for Control.GetStatus.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterStats {
    /// Tasks in PROVISIONING.
    pub provisioning: usize,
    /// Tasks in RUNNING.
    pub running: usize,
    /// Tasks in DEPROVISIONING.
    pub deprovisioning: usize,
    /// Tasks in STOPPED (kept ones).
    pub stopped: usize,
    /// Workflow events waiting to be published.
    pub outbox_pending: usize,
    /// Failed PutEvents attempts from the outbox.
    pub outbox_errors: u64,
    /// Workflow events EventBridge accepted.
    pub events_published: u64,
    /// Deliveries that advanced a task.
    pub transitions_applied: u64,
    /// Deliveries that changed nothing (duplicates).
    pub unchanged_deliveries: u64,
    /// The service's desired count.
    pub desired: u32,
    /// Most recent scaling decision, if any.
    pub last_decision: Option<pb::ScalingDecision>,
    /// Alarm state the last evaluation saw (or the error).
    pub last_alarm_state: String,
    /// Evaluations that could not decide.
    pub no_decisions: u64,
    /// Evaluations that raised the desired count.
    pub scale_outs: u64,
    /// Wall ms from RunTask to RUNNING of the most recently started task.
    pub last_provision_ms: i64,
}

/// Tasks, the outbox and the scaled service, shared by the APIs and loops.
#[derive(Debug)]
pub struct Cluster {
    state: Mutex<State>,
    /// Name of the auto-scaled service.
    service: String,
    /// CloudWatch alarm its scaling policy reads.
    scaling_alarm: String,
    /// Largest desired count.
    max_tasks: u32,
    /// Wakes the outbox publisher when an event is queued.
    outbox_wake: tokio::sync::Notify,
    /// The last failed publish and when, for the cause chain.
    outbox_failure: RecentFailure,
}

impl Cluster {
    /// A cluster with one service `service` scaled by `scaling_alarm`, up to `max_tasks`.
    pub fn new(service: &str, scaling_alarm: &str, max_tasks: u32) -> Self {
        Self {
            state: Mutex::default(),
            service: service.to_owned(),
            scaling_alarm: scaling_alarm.to_owned(),
            max_tasks,
            outbox_wake: tokio::sync::Notify::new(),
            outbox_failure: RecentFailure::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Name of the auto-scaled service.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Largest desired count.
    pub fn max_tasks(&self) -> u32 {
        self.max_tasks
    }

    /// Queues a workflow event and wakes the publisher.
    fn publish(&self, s: &mut State, task_id: &str, transition: Transition) {
        let detail = WorkflowDetail {
            task_id: task_id.to_owned(),
            transition,
        };
        s.outbox.push_back((task_id.to_owned(), detail.entry()));
        if let Some(e) = s.tasks.get_mut(task_id) {
            e.queued_events += 1;
        }
        self.outbox_wake.notify_one();
    }

    fn launch(&self, s: &mut State, task_definition: &str, service: &str) -> pb::Task {
        let id: u64 = rand::random();
        let task = pb::Task {
            task_id: format!("task-{id:016x}"),
            task_definition: task_definition.to_owned(),
            last_status: PROVISIONING.into(),
            created_at_ms: now_ms(),
            started_at_ms: 0,
            stopped_at_ms: 0,
            service: service.to_owned(),
            pending_reason: String::new(),
        };
        s.next_seq += 1;
        let seq = s.next_seq;
        s.tasks.insert(
            task.task_id.clone(),
            TaskEntry {
                seq,
                task: task.clone(),
                queued_events: 0,
                published_at_ms: 0,
            },
        );
        // Provisioning happens only when this event comes back from EventBridge.
        self.publish(s, &task.task_id, Transition::Provision);
        tracing::info!(task = %task.task_id, service, "task provisioning");
        self.view(s, &task.task_id).unwrap_or(task)
    }

    fn stop(&self, s: &mut State, task_id: &str) -> Result<pb::Task, ServiceError> {
        let entry = s
            .tasks
            .get_mut(task_id)
            .ok_or_else(|| unknown_task(task_id))?;
        let status = entry.task.last_status.as_str();
        if status != PROVISIONING && status != RUNNING {
            return Err(ServiceError::invalid(format!(
                "task_id: task {task_id:?} is already {status}; only PROVISIONING or RUNNING tasks can be stopped"
            )));
        }
        entry.task.last_status = DEPROVISIONING.into();
        self.publish(s, task_id, Transition::Deprovision);
        tracing::info!(task = %task_id, "task deprovisioning");
        self.view(s, task_id).ok_or_else(|| unknown_task(task_id))
    }

    /// RunTask: a new task in PROVISIONING; `service` is empty or this cluster's service.
    pub fn run_task(&self, task_definition: &str, service: &str) -> Result<pb::Task, ServiceError> {
        if task_definition.is_empty() {
            return Err(ServiceError::invalid(
                "task_definition: must not be empty (e.g. \"web:1\")",
            ));
        }
        if !service.is_empty() && service != self.service {
            return Err(unknown_service(service, &self.service));
        }
        let mut s = self.lock();
        Ok(self.launch(&mut s, task_definition, service))
    }

    /// StopTask: a PROVISIONING or RUNNING task goes to DEPROVISIONING.
    pub fn stop_task(&self, task_id: &str) -> Result<pb::Task, ServiceError> {
        if task_id.is_empty() {
            return Err(ServiceError::invalid("task_id: must not be empty"));
        }
        let mut s = self.lock();
        self.stop(&mut s, task_id)
    }

    /// UpdateService: sets the desired count and runs or stops tasks to match.
    pub fn update_service(&self, service: &str, desired: u32) -> Result<(), ServiceError> {
        if service != self.service {
            return Err(unknown_service(service, &self.service));
        }
        if desired > self.max_tasks {
            return Err(ServiceError::invalid(format!(
                "desired_count: {desired} is above the limit; valid is 0 to {}",
                self.max_tasks
            )));
        }
        let mut s = self.lock();
        s.desired = desired;
        self.reconcile(&mut s);
        Ok(())
    }

    /// Runs or stops the service's tasks until the live ones match the desired count.
    fn reconcile(&self, s: &mut State) {
        let mut live: Vec<(u64, String)> = s
            .tasks
            .values()
            .filter(|e| {
                e.task.service == self.service
                    && (e.task.last_status == PROVISIONING || e.task.last_status == RUNNING)
            })
            .map(|e| (e.seq, e.task.task_id.clone()))
            .collect();
        let desired = s.desired as usize;
        let definition = format!("{}:1", self.service);
        for _ in live.len()..desired {
            self.launch(s, &definition, &self.service.clone());
        }
        if live.len() > desired {
            // Scale in: the newest tasks go first.
            live.sort_unstable();
            for (_, id) in live.split_off(desired) {
                if let Err(e) = self.stop(s, &id) {
                    tracing::warn!(task = %id, error = %e, "cannot stop task while scaling in");
                }
            }
        }
    }

    /// DescribeTasks: the named tasks (every task when `ids` is empty), each
    /// still waiting one with why (`pending_reason`).
    pub fn describe_tasks(&self, ids: &[String]) -> Result<Vec<pb::Task>, ServiceError> {
        let s = self.lock();
        if ids.is_empty() {
            let mut all: Vec<&TaskEntry> = s.tasks.values().collect();
            all.sort_unstable_by_key(|e| e.seq);
            return Ok(all
                .into_iter()
                .filter_map(|e| self.view(&s, &e.task.task_id))
                .collect());
        }
        ids.iter()
            .map(|id| self.view(&s, id).ok_or_else(|| unknown_task(id)))
            .collect()
    }

    /// DescribeServices: the one auto-scaled service and its recent decisions.
    pub fn describe_service(&self) -> pb::EcsService {
        let s = self.lock();
        let count = |status: &str| {
            s.tasks
                .values()
                .filter(|e| e.task.service == self.service && e.task.last_status == status)
                .count() as u32
        };
        pb::EcsService {
            name: self.service.clone(),
            desired_count: s.desired,
            running_count: count(RUNNING),
            pending_count: count(PROVISIONING),
            scaling_alarm: self.scaling_alarm.clone(),
            decisions: s.decisions.iter().cloned().collect(),
        }
    }

    /// Applies a delivered workflow event. Idempotent: a duplicate changes nothing.
    pub fn apply(&self, event: &Event) -> Result<Applied, ServiceError> {
        if event.source != WORKFLOW_SOURCE || event.detail_type != WORKFLOW_DETAIL_TYPE {
            return Err(ServiceError::invalid(format!(
                "source/detail_type: ECS handles only {WORKFLOW_SOURCE:?} / {WORKFLOW_DETAIL_TYPE:?} events, got {:?} / {:?}",
                event.source, event.detail_type
            )));
        }
        let detail: WorkflowDetail = serde_json::from_str(&event.detail).map_err(|e| {
            ServiceError::invalid(format!(
                "detail: expected {{\"task_id\":..,\"transition\":\"provision\"|\"deprovision\"}} ({e})"
            ))
        })?;
        let mut s = self.lock();
        let now = now_ms();
        let entry = s
            .tasks
            .get_mut(&detail.task_id)
            .ok_or_else(|| unknown_task(&detail.task_id))?;
        let (from, to) = match detail.transition {
            Transition::Provision => (PROVISIONING, RUNNING),
            Transition::Deprovision => (DEPROVISIONING, STOPPED),
        };
        if entry.task.last_status != from {
            s.unchanged_deliveries += 1;
            return Ok(Applied::Unchanged);
        }
        entry.task.last_status = to.into();
        let provision_ms = now - entry.task.created_at_ms;
        match detail.transition {
            Transition::Provision => entry.task.started_at_ms = now,
            Transition::Deprovision => entry.task.stopped_at_ms = now,
        }
        tracing::info!(task = %detail.task_id, status = to, latency_ms = now - event.put_at_ms, "workflow event applied");
        s.transitions_applied += 1;
        match detail.transition {
            Transition::Provision => s.last_provision_ms = provision_ms,
            Transition::Deprovision => forget_old_stopped(&mut s),
        }
        Ok(Applied::Advanced)
    }

    /// Publishes the outbox, oldest first, in batches, until it is empty or a
    /// publish fails (the failed batch stays, to be retried). Returns how many
    /// events were published.
    pub async fn flush_outbox(&self, publisher: &dyn EventPublisher) -> Result<usize, String> {
        let mut sent = 0;
        loop {
            // Only the outbox task removes entries, so the front batches stay put while we await.
            let batches: Vec<Vec<EventEntry>> = {
                let s = self.lock();
                let front: Vec<EventEntry> = s
                    .outbox
                    .iter()
                    .take(OUTBOX_BATCH * OUTBOX_IN_FLIGHT)
                    .map(|(_, e)| e.clone())
                    .collect();
                front
                    .chunks(OUTBOX_BATCH)
                    .map(<[EventEntry]>::to_vec)
                    .collect()
            };
            if batches.is_empty() {
                return Ok(sent);
            }
            let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
            let results =
                futures::future::join_all(batches.into_iter().map(|b| publisher.put_events(b)))
                    .await;
            // Only the batches accepted in order leave the outbox; a later
            // one accepted after a refused one is sent again (ECS applies a
            // repeated workflow event as unchanged).
            let accepted = results.iter().take_while(|r| r.is_ok()).count();
            let n: usize = sizes[..accepted].iter().sum();
            if n > 0 {
                self.published(n);
                sent += n;
            }
            if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
                let mut s = self.lock();
                s.outbox_errors += 1;
                s.last_outbox_error.clone_from(&e);
                self.outbox_failure.record(e.clone());
                return Err(e);
            }
        }
    }

    /// Removes the `n` front events of the outbox, now published.
    fn published(&self, n: usize) {
        let mut s = self.lock();
        let now = now_ms();
        let published: Vec<String> = s.outbox.drain(..n).map(|(id, _)| id).collect();
        for id in published {
            if let Some(e) = s.tasks.get_mut(&id) {
                e.queued_events = e.queued_events.saturating_sub(1);
                e.published_at_ms = now;
            }
        }
        s.last_outbox_error.clear();
        s.events_published += n as u64;
    }

    /// Number of events waiting in the outbox.
    pub fn outbox_len(&self) -> usize {
        self.lock().outbox.len()
    }

    /// Waits until an event is queued in the outbox.
    pub async fn outbox_queued(&self) {
        self.outbox_wake.notified().await;
    }

    /// Records one policy evaluation given what DescribeAlarms answered, and
    /// applies it (a scale-out runs tasks like UpdateService does).
    pub fn evaluate_scaling(&self, alarm: Result<String, String>) -> pb::ScalingDecision {
        let mut s = self.lock();
        let (action, desired) = scaling::decide(&alarm, s.desired, self.max_tasks);
        let alarm_state = match alarm {
            Ok(state) => state,
            Err(e) => format!("error: {e}"),
        };
        match action {
            scaling::NO_DECISION => s.no_decisions += 1,
            scaling::SCALE_OUT => s.scale_outs += 1,
            _ => {}
        }
        if desired != s.desired {
            tracing::info!(from = s.desired, to = desired, %alarm_state, "scaling out");
            s.desired = desired;
            self.reconcile(&mut s);
        }
        let decision = pb::ScalingDecision {
            at_ms: now_ms(),
            action: action.into(),
            alarm_state: alarm_state.clone(),
            desired_count: desired,
        };
        s.last_alarm_state = alarm_state;
        if s.decisions.len() == DECISIONS_KEPT {
            s.decisions.pop_front();
        }
        s.decisions.push_back(decision.clone());
        decision
    }

    /// Current gauges.
    pub fn stats(&self) -> ClusterStats {
        let s = self.lock();
        let count = |status: &str| {
            s.tasks
                .values()
                .filter(|e| e.task.last_status == status)
                .count()
        };
        ClusterStats {
            provisioning: count(PROVISIONING),
            running: count(RUNNING),
            deprovisioning: count(DEPROVISIONING),
            stopped: count(STOPPED),
            outbox_pending: s.outbox.len(),
            outbox_errors: s.outbox_errors,
            events_published: s.events_published,
            transitions_applied: s.transitions_applied,
            unchanged_deliveries: s.unchanged_deliveries,
            desired: s.desired,
            last_decision: s.decisions.back().cloned(),
            last_alarm_state: s.last_alarm_state.clone(),
            no_decisions: s.no_decisions,
            scale_outs: s.scale_outs,
            last_provision_ms: s.last_provision_ms,
        }
    }
}

/// Keeps at most [`STOPPED_KEPT`] stopped tasks, forgetting the oldest.
fn forget_old_stopped(s: &mut State) {
    let mut stopped: Vec<(u64, String)> = s
        .tasks
        .values()
        .filter(|e| e.task.last_status == STOPPED)
        .map(|e| (e.seq, e.task.task_id.clone()))
        .collect();
    if stopped.len() <= STOPPED_KEPT {
        return;
    }
    stopped.sort_unstable();
    let excess = stopped.len() - STOPPED_KEPT;
    for (_, id) in stopped.into_iter().take(excess) {
        s.tasks.remove(&id);
    }
}

fn unknown_task(id: &str) -> ServiceError {
    ServiceError::not_found(format!("task_id: no task {id:?} in this cluster"))
}

fn unknown_service(name: &str, ours: &str) -> ServiceError {
    ServiceError::not_found(format!(
        "service: no service {name:?}; this cluster runs {ours:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Records what it publishes; fails while `down` is set.
    #[derive(Default)]
    struct FakeBridge {
        down: AtomicBool,
        sent: Mutex<Vec<EventEntry>>,
    }

    #[tonic::async_trait]
    impl EventPublisher for FakeBridge {
        async fn put_events(&self, entries: Vec<EventEntry>) -> Result<(), String> {
            if self.down.load(Ordering::SeqCst) {
                return Err("EventBridge: UNAVAILABLE (Kinesis)".into());
            }
            self.sent.lock().extend(entries);
            Ok(())
        }
    }

    impl FakeBridge {
        /// What EventBridge would deliver back: the published events, drained.
        fn take(&self) -> Vec<Event> {
            std::mem::take(&mut *self.sent.lock())
                .into_iter()
                .map(|e| Event {
                    event_id: "id".into(),
                    source: e.source,
                    detail_type: e.detail_type,
                    detail: e.detail,
                    put_at_ms: now_ms(),
                    rule: "ecs-task-workflow".into(),
                    time_ms: e.time_ms,
                })
                .collect()
        }
    }

    fn status(c: &Cluster, id: &str) -> String {
        c.describe_tasks(&[id.to_owned()]).expect("task exists")[0]
            .last_status
            .clone()
    }

    #[tokio::test]
    async fn a_task_advances_only_when_its_event_is_delivered() {
        let c = Cluster::new("web", "alarm", 8);
        let bridge = FakeBridge::default();
        let t = c.run_task("web:1", "").expect("run").task_id;
        assert_eq!(status(&c, &t), PROVISIONING);
        assert_eq!(c.flush_outbox(&bridge).await, Ok(1));
        assert_eq!(status(&c, &t), PROVISIONING, "published is not delivered");
        let events = bridge.take();
        assert_eq!(c.apply(&events[0]).expect("apply"), Applied::Advanced);
        assert_eq!(status(&c, &t), RUNNING);

        c.stop_task(&t).expect("stop");
        assert_eq!(status(&c, &t), DEPROVISIONING);
        c.flush_outbox(&bridge).await.expect("publish");
        let events = bridge.take();
        assert_eq!(c.apply(&events[0]).expect("apply"), Applied::Advanced);
        assert_eq!(status(&c, &t), STOPPED);
        assert!(
            c.stop_task(&t).is_err(),
            "a stopped task cannot be stopped again"
        );
    }

    #[tokio::test]
    async fn a_duplicate_delivery_changes_nothing() {
        let c = Cluster::new("web", "alarm", 8);
        let bridge = FakeBridge::default();
        let t = c.run_task("web:1", "web").expect("run").task_id;
        c.flush_outbox(&bridge).await.expect("publish");
        let provision = bridge.take().remove(0);
        assert_eq!(c.apply(&provision).expect("apply"), Applied::Advanced);
        let started = c.describe_tasks(std::slice::from_ref(&t)).expect("task")[0].started_at_ms;
        assert_eq!(c.apply(&provision).expect("apply"), Applied::Unchanged);
        let task = c
            .describe_tasks(std::slice::from_ref(&t))
            .expect("task")
            .remove(0);
        assert_eq!(
            (task.last_status.as_str(), task.started_at_ms),
            (RUNNING, started)
        );
        // A late provision event after a stop must not bring the task back.
        c.stop_task(&t).expect("stop");
        assert_eq!(c.apply(&provision).expect("apply"), Applied::Unchanged);
        assert_eq!(status(&c, &t), DEPROVISIONING);
        assert_eq!(c.stats().unchanged_deliveries, 2);
    }

    #[tokio::test]
    async fn the_outbox_keeps_events_while_publishing_fails() {
        let c = Cluster::new("web", "alarm", 20);
        let bridge = FakeBridge::default();
        bridge.down.store(true, Ordering::SeqCst);
        c.update_service("web", 12).expect("update");
        for _ in 0..3 {
            assert!(c.flush_outbox(&bridge).await.is_err());
            assert_eq!(c.outbox_len(), 12, "nothing lost while EventBridge fails");
        }
        assert_eq!(c.stats().provisioning, 12);
        bridge.down.store(false, Ordering::SeqCst);
        assert_eq!(c.flush_outbox(&bridge).await, Ok(12), "two batches, 10 + 2");
        assert_eq!(c.outbox_len(), 0);
        for e in bridge.take() {
            c.apply(&e).expect("apply");
        }
        let s = c.stats();
        assert_eq!((s.running, s.provisioning, s.outbox_errors), (12, 0, 3));
    }

    #[test]
    fn update_service_scales_in_newest_first_and_validates() {
        let c = Cluster::new("web", "alarm", 8);
        c.update_service("web", 3).expect("update");
        let first = c.describe_tasks(&[]).expect("all")[0].task_id.clone();
        c.update_service("web", 1).expect("update");
        assert_eq!(status(&c, &first), PROVISIONING, "the oldest task is kept");
        let s = c.stats();
        assert_eq!((s.provisioning, s.deprovisioning, s.desired), (1, 2, 1));
        assert!(matches!(
            c.update_service("web", 9),
            Err(ServiceError::InvalidArgument(_))
        ));
        assert!(matches!(
            c.update_service("api", 1),
            Err(ServiceError::NotFound(_))
        ));
        assert!(matches!(
            c.stop_task("task-nope"),
            Err(ServiceError::NotFound(_))
        ));
        assert!(matches!(
            c.describe_tasks(&["task-nope".into()]),
            Err(ServiceError::NotFound(_))
        ));
        assert!(matches!(
            c.run_task("", ""),
            Err(ServiceError::InvalidArgument(_))
        ));
    }

    #[test]
    fn deliveries_that_are_not_ecs_workflow_events_are_rejected() {
        let c = Cluster::new("web", "alarm", 8);
        let mut e = Event {
            source: "aws.ec2".into(),
            detail_type: WORKFLOW_DETAIL_TYPE.into(),
            detail: "{}".into(),
            ..Default::default()
        };
        assert!(matches!(c.apply(&e), Err(ServiceError::InvalidArgument(_))));
        e.source = WORKFLOW_SOURCE.into();
        assert!(matches!(c.apply(&e), Err(ServiceError::InvalidArgument(_))));
        e.detail = r#"{"task_id":"task-x","transition":"provision"}"#.into();
        assert!(matches!(c.apply(&e), Err(ServiceError::NotFound(_))));
    }

    #[test]
    fn scaling_waits_on_insufficient_data_and_scales_out_on_alarm() {
        let c = Cluster::new("web", "alarm", 3);
        c.update_service("web", 2).expect("update");
        let d = c.evaluate_scaling(Ok("INSUFFICIENT_DATA".into()));
        assert_eq!((d.action.as_str(), d.desired_count), ("no-decision", 2));
        let d = c.evaluate_scaling(Err("CloudWatch: unavailable".into()));
        assert_eq!((d.action.as_str(), d.desired_count), ("no-decision", 2));
        let d = c.evaluate_scaling(Ok("OK".into()));
        assert_eq!((d.action.as_str(), d.desired_count), ("within-target", 2));
        let d = c.evaluate_scaling(Ok("ALARM".into()));
        assert_eq!((d.action.as_str(), d.desired_count), ("scale-out", 3));
        assert_eq!(c.stats().provisioning, 3, "scale-out ran a task");
        let d = c.evaluate_scaling(Ok("ALARM".into()));
        assert_eq!((d.action.as_str(), d.desired_count), ("at-max", 3));
        let s = c.stats();
        assert_eq!((s.no_decisions, s.scale_outs), (2, 1));
        assert_eq!(c.describe_service().decisions.len(), 5);
    }
}
