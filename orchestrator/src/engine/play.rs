//! Playing a scenario: the topology up, the steady state before the first
//! step, then the observation loop (every 250 ms, never blocked by a step)
//! that journals changes, tracks impact and judges expectations, until
//! every step ran, every expectation is decided, and every service has
//! recovered with the steady state holding again (or the scenario's end).

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::cascade::CascadeTracker;
use super::fidelity::FidelityTracker;
use super::impact::ImpactTracker;
use super::journal::{Journal, Output, out};
use super::judge::{Eval, Judge, Seen, evaluate, holds};
use super::report::{EventKind, ExpectationResult, Report};
use super::stepper::{self, StepEvent};
use crate::clock::{parse_when, tenths};
use crate::scenario::Scenario;
use crate::state::{Health, MapState, Verdict};
use crate::status::Status;

/// How often the run observes and judges.
const OBSERVE_EVERY: Duration = Duration::from_millis(250);
/// How long the steady-state hypothesis has to hold before the first step.
const STEADY_DEADLINE: Duration = Duration::from_secs(60);
/// How long it must hold without a break to count as steady: two health
/// windows, so the start-up of customer traffic is behind it.
const STEADY_FOR: Duration = Duration::from_secs(10);
/// The name of the steady-state check after the last step, in the report.
pub const STEADY_AFTER: &str = "steady state holds again after the last step";

/// A run in progress: what it has written and recorded so far.
pub struct Runner {
    pub s: Scenario,
    pub journal: Journal,
    pub tracker: ImpactTracker,
    pub seen: Seen,
    /// Per expectation (and the steady state after), its decision so far.
    pub expectations: Vec<(String, Option<(bool, String)>)>,
    pub verdict: Verdict,
    /// The postmortem's timed events, as the replay shows them.
    pub fidelity: FidelityTracker,
    /// The dependency graph and the evidence each edge carried the failure.
    pub cascade: CascadeTracker,
    /// When the step in progress started (wall seconds).
    step_started: f64,
    /// `--until`: the wall offset at which the run stops.
    until: Option<Duration>,
}

impl Runner {
    /// A runner that has not started.
    pub fn new(s: Scenario, journal: Journal, until: Option<Duration>) -> Self {
        let mut expectations: Vec<_> = s
            .expectations
            .iter()
            .map(|x| (x.name.clone(), None))
            .collect();
        if !s.steady_state.is_empty() {
            expectations.push((STEADY_AFTER.to_owned(), None));
        }
        let seen = Seen {
            clock: Some(journal.clock),
            ..Default::default()
        };
        let fidelity = FidelityTracker::new(&s.fidelity, journal.clock);
        let cascade = CascadeTracker::new(s.topology.services.iter().any(|x| x == "cognito"));
        Self {
            s,
            journal,
            tracker: ImpactTracker::default(),
            seen,
            expectations,
            verdict: Verdict::Pass,
            fidelity,
            cascade,
            step_started: 0.0,
            until,
        }
    }

    /// Brings the topology up, waits for the steady state, then plays.
    pub async fn play(
        &mut self,
        start: tokio::task::JoinHandle<anyhow::Result<()>>,
        attach: bool,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        tokio::select! {
            r = start => r.context("start task")??,
            _ = shutdown.cancelled() => anyhow::bail!("interrupted while the topology was starting"),
        }
        self.journal.started = Instant::now();
        self.journal.phase = "up".into();
        self.journal.log(EventKind::Up, "topology up");
        if attach {
            self.warn_if_attached_differs().await?;
        }
        self.wait_steady(shutdown).await?;
        self.journal.started = Instant::now();
        self.journal.phase = "steady state".into();
        self.journal.log(
            EventKind::Steady,
            "steady-state hypothesis holds; incident clock running",
        );
        self.main_loop(shutdown).await
    }

    /// The running fleet was not started from this scenario: say so when
    /// it differs from the scenario's topology.
    async fn warn_if_attached_differs(&mut self) -> anyhow::Result<()> {
        let st = crate::client::fetch_status().await?;
        let t = &self.s.topology;
        if st.frontends.len() != t.frontends as usize
            || st.thread_limit.limit != Some(t.thread_limit)
            || st.time_scale != t.time_scale
        {
            let line = format!(
                "attached fleet ({} front-ends, thread limit {:?}, time scale {}) differs from the scenario's topology ({}, {}, {})",
                st.frontends.len(),
                st.thread_limit.limit,
                st.time_scale,
                t.frontends,
                t.thread_limit,
                t.time_scale
            );
            self.journal.log(EventKind::Warning, line);
        }
        Ok(())
    }

    /// Waits for the steady-state hypothesis to hold, without a break, for
    /// [`STEADY_FOR`] before the first step.
    async fn wait_steady(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let until = Instant::now() + STEADY_DEADLINE;
        let mut since: Option<Instant> = None;
        let mut last = String::new();
        loop {
            let st = crate::client::fetch_status().await?;
            let failing =
                self.s
                    .steady_state
                    .iter()
                    .find_map(|c| match evaluate(c, &st, &Seen::default()) {
                        Eval::Holds(_) => None,
                        Eval::Not(w) | Eval::Never(w) => Some(w),
                    });
            match failing {
                None if since.get_or_insert_with(Instant::now).elapsed() >= STEADY_FOR => {
                    return Ok(());
                }
                None => {}
                Some(w) => {
                    since = None;
                    last = w;
                }
            }
            if Instant::now() > until {
                anyhow::bail!(
                    "the steady-state hypothesis did not hold for {STEADY_FOR:?} before the first step; last seen: {last}"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(OBSERVE_EVERY) => {}
                _ = shutdown.cancelled() => anyhow::bail!("interrupted before the first step"),
            }
        }
    }

    /// Wall offset of the scenario's end, if it has one.
    fn end(&self) -> Option<Duration> {
        let clock = self.journal.clock;
        let end = self.s.scenario.end.as_deref()?;
        parse_when(end, clock.start).ok().map(|s| clock.wall_of(s))
    }

    async fn main_loop(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let steps = self
            .s
            .steps
            .iter()
            .map(|st| (self.s.wall(&st.at), st.clone()))
            .collect();
        let stop = shutdown.child_token();
        let mut events = stepper::spawn(
            steps,
            self.journal.started,
            self.s.topology.time_scale,
            stop.clone(),
        );
        let _stop_steps = stop.drop_guard();
        let mut judge = Judge::new(&self.s.expectations, self.journal.clock);
        let mut steps_done = false;
        let mut alarms_seen = 0;
        let mut last_view = 0.0;
        loop {
            while let Ok(e) = events.try_recv() {
                steps_done |= self.on_step_event(e);
            }
            let st = crate::client::fetch_status().await?;
            let t = self.journal.elapsed_s();
            for a in st.alarms.iter().skip(alarms_seen) {
                self.journal.log(EventKind::Alarm, a.clone());
            }
            alarms_seen = st.alarms.len();
            for (kind, line) in self.tracker.observe(&st, t) {
                self.journal.log(kind, line);
            }
            if self.journal.output == Output::Human && t - last_view >= 5.0 {
                last_view = t;
                self.live_view(&st, t);
            }
            self.seen.impaired = self.tracker.first_impaired();
            self.cascade.observe(&st, t);
            self.seen.remember(t, &st);
            if let Some(c) = self.s.aborts.iter().find(|c| holds(c, &st, &self.seen)) {
                self.journal
                    .log(EventKind::Abort, format!("abort condition met: {c:?}"));
                self.verdict = Verdict::Aborted;
                break;
            }
            let now = self.journal.started.elapsed();
            self.fidelity.observe(&st, &self.seen, now);
            for (i, (held, detail)) in judge.observe(&st, &self.seen, now) {
                let kind = if held {
                    EventKind::ExpectHeld
                } else {
                    EventKind::ExpectFailed
                };
                self.journal
                    .log(kind, format!("{} ({detail})", self.expectations[i].0));
                self.expectations[i].1 = Some((held, detail));
            }
            if steps_done && judge.done() && self.settled(&st) {
                break;
            }
            if self.until.is_some_and(|u| now >= u) {
                self.journal.log(
                    EventKind::Stopped,
                    "stopped at --until; expectations not decided by now do not hold",
                );
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(OBSERVE_EVERY) => {}
                _ = shutdown.cancelled() => {
                    self.verdict = Verdict::Aborted;
                    self.journal.log(EventKind::Interrupted, "Ctrl-C: stopping, reverting faults, taking everything down");
                    break;
                }
            }
        }
        for (i, why) in judge.unjudged() {
            self.expectations[i].1 = Some((false, why));
        }
        Ok(())
    }

    /// Journals a step's start, result or progress; true once every step ran.
    fn on_step_event(&mut self, e: StepEvent) -> bool {
        match e {
            StepEvent::Started { kind } => {
                self.journal.phase = kind.to_owned();
                self.step_started = self.journal.elapsed_s();
            }
            StepEvent::Done {
                description,
                result,
            } => {
                self.seen
                    .steps
                    .push((description.clone(), result.is_ok(), self.step_started));
                match result {
                    Ok(d) => self
                        .journal
                        .log(EventKind::Step, format!("{description} -> {d}")),
                    Err(e) => {
                        let t = self.journal.elapsed_s();
                        self.cascade.step_failed(&description, &e, t);
                        self.journal
                            .log(EventKind::StepFailed, format!("{description}: {e}"));
                    }
                }
            }
            StepEvent::Progress(p) => self.journal.log(EventKind::Restart, p),
            StepEvent::Finished => return true,
        }
        false
    }

    /// After the last step: whether the run is over. It is once every
    /// service serves and the steady state holds again, or at the
    /// scenario's end (at once, without an end); the steady state's
    /// verdict is recorded either way.
    fn settled(&mut self, st: &Status) -> bool {
        let recovered = st.services.iter().all(|s| s.health == Health::Serving);
        let failing: Vec<String> = self
            .s
            .steady_state
            .iter()
            .filter_map(|c| match evaluate(c, st, &self.seen) {
                Eval::Holds(_) => None,
                Eval::Not(w) | Eval::Never(w) => Some(w),
            })
            .collect();
        let at_end = self
            .end()
            .is_none_or(|e| self.journal.started.elapsed() >= e);
        if !(at_end || recovered && failing.is_empty()) {
            return false;
        }
        if let Some(slot) = self
            .expectations
            .iter_mut()
            .find(|(n, _)| n == STEADY_AFTER)
        {
            let clock = self.journal.clock_now();
            let decision = if failing.is_empty() {
                (true, format!("held again at {clock}"))
            } else {
                (
                    false,
                    format!("did not hold again by {clock}: {}", failing.join("; ")),
                )
            };
            let kind = if decision.0 {
                EventKind::SteadyAfter
            } else {
                EventKind::ExpectFailed
            };
            self.journal
                .log(kind, format!("{STEADY_AFTER} ({})", decision.1));
            slot.1 = Some(decision);
        }
        true
    }

    /// One line with every service's state (terminal only; the journal
    /// keeps the changes).
    fn live_view(&self, st: &Status, t: f64) {
        let states: Vec<String> = st
            .services
            .iter()
            .filter(|x| x.name != "kinesis-backend")
            .map(|x| format!("{}={}", x.name, x.health))
            .collect();
        out(format_args!(
            "[{} | +{t:>6.1}s] {:<18} {:<13} {}; maps {}/{} ready",
            self.journal.clock_now(),
            self.journal.phase,
            "state",
            states.join(" "),
            st.count_maps(MapState::Ready),
            st.main_fleet().count()
        ));
    }

    /// Rollback steps, then the fleet down (unless attached), then the verdict.
    pub async fn finish(&mut self, attach: bool) {
        self.journal.phase = "rollback".into();
        let (progress, _) = tokio::sync::mpsc::unbounded_channel();
        for r in self.s.rollbacks.clone() {
            match super::steps::apply(&r.action, self.s.topology.time_scale, &progress).await {
                Ok(d) => self.journal.log(
                    EventKind::Rollback,
                    format!("{} -> {d}", r.action.describe()),
                ),
                Err(e) => self.journal.log(
                    EventKind::RollbackFailed,
                    format!("{}: {e:#}", r.action.describe()),
                ),
            }
        }
        if attach {
            self.journal.log(EventKind::Attached, "the fleet stays up");
        } else if let Err(e) = crate::client::down().await {
            self.journal.log(EventKind::Error, format!("down: {e:#}"));
        }
        if self.verdict == Verdict::Pass
            && self
                .expectations
                .iter()
                .any(|(_, d)| !matches!(d, Some((true, _))))
        {
            self.verdict = Verdict::Fail;
        }
        self.journal.phase = "done".into();
        self.journal.log(EventKind::Verdict, self.verdict.as_str());
    }

    /// The report of the run so far.
    pub fn report(&self, seed: u64, wall_s: f64) -> Report {
        let clock = self.journal.clock;
        let mut services = self.tracker.impact.clone();
        for v in services.values_mut() {
            v.impaired_s = tenths(v.impaired_s);
            v.impaired_clock = v.impaired_at_s.map(|t| clock.clock_at(t));
        }
        Report {
            scenario: self.s.scenario.name.clone(),
            seed,
            time_scale: self.s.topology.time_scale,
            verdict: self.verdict,
            remediations: self.s.topology.remediations.clone(),
            start_clock: crate::clock::clock(clock.start),
            wall_s: tenths(wall_s),
            services,
            impaired_order: self.tracker.impaired_order(),
            cascade: self.cascade.edges(&self.tracker.first_impaired()),
            timeline: self.tracker.timeline.clone(),
            frontends: self.tracker.fleet.clone(),
            stocks: self.tracker.stocks.clone(),
            expectations: self
                .expectations
                .iter()
                .map(|(name, d)| ExpectationResult {
                    name: name.clone(),
                    held: matches!(d, Some((true, _))),
                    detail: d
                        .as_ref()
                        .map_or("not judged (run stopped)".into(), |(_, x)| x.clone()),
                })
                .collect(),
            events: self.journal.events.clone(),
            fidelity: (!self.s.fidelity.is_empty()).then(|| self.fidelity.table()),
        }
    }
}
