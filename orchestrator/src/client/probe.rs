//! `cascade probe <service>`: one representative customer call, repeated,
//! reported (it does not judge: exit 0 even when calls fail).

use std::time::{Duration, Instant};

use super::{UsageError, fetch_status};

/// `cascade probe` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// Service to call: kinesis, cognito, cloudwatch, lambda, eventbridge or ecs.
    pub service: String,
    /// Calls to make, one after the other.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: u32,
    /// Deadline of each call.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
    /// Print `{"service","ok","failed","p50_ms","p99_ms","errors":{..}}`.
    #[arg(long)]
    pub json: bool,
}

/// `cascade probe <service>`: reports; does not judge (exit 0 even when calls fail).
pub async fn probe(args: ProbeArgs) -> anyhow::Result<()> {
    let svc = crate::topology::Service::parse(&args.service).ok_or_else(|| {
        UsageError(format!(
            "unknown service {:?}; valid: {}",
            args.service,
            crate::topology::Service::ALL.map(|s| s.name()).join(", ")
        ))
    })?;
    let st = fetch_status().await?;
    let backend = st
        .services
        .iter()
        .find(|s| s.name == "kinesis-backend")
        .map(|s| s.addr.clone())
        .unwrap_or_default();
    let cellular = st.frontends.iter().any(|f| f.fleet.starts_with("cell-"));
    let mut targets = crate::traffic::Targets {
        backend,
        services: Default::default(),
        kinesis_fleet: if cellular { "cell-*" } else { "" }.to_owned(),
    };
    if svc != crate::topology::Service::Kinesis {
        let entry = st
            .services
            .iter()
            .find(|s| s.name == svc.name())
            .ok_or_else(|| UsageError(format!("{} is not running in this fleet", svc.name())))?;
        targets.services.insert(
            svc,
            entry.instances.iter().map(|i| i.addr.clone()).collect(),
        );
    }
    let caller = crate::traffic::Caller::new(&targets, args.deadline)?;
    let mut bucket = crate::traffic::Bucket::default();
    for n in 0..u64::from(args.count) {
        let t0 = Instant::now();
        let r = caller.call(svc, n).await;
        bucket
            .latencies_ms
            .push(t0.elapsed().as_secs_f64() * 1000.0);
        match r {
            Ok(()) => bucket.ok += 1,
            Err(s) => {
                bucket.failed += 1;
                *bucket
                    .errors
                    .entry(crate::traffic::code_name(s.code()))
                    .or_default() += 1;
            }
        }
    }
    let sum = crate::traffic::Summary::of(std::iter::once(&bucket));
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "service": svc.name(), "ok": sum.ok, "failed": sum.failed,
                "p50_ms": sum.p50_ms, "p99_ms": sum.p99_ms, "errors": sum.errors,
            })
        );
    } else {
        println!(
            "{}: {} ok, {} failed, p50 {:.1} ms, p99 {:.1} ms{}",
            svc.name(),
            sum.ok,
            sum.failed,
            sum.p50_ms,
            sum.p99_ms,
            if sum.errors.is_empty() {
                String::new()
            } else {
                format!(", errors {:?}", sum.errors)
            }
        );
    }
    Ok(())
}
