//! `cascade compare`: the remediation A/B matrix. The scenario runs once
//! per variant (baseline and remediations), one after the other, each with
//! the same seed and its own report; then the blast-radius table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::journal::out;
use super::report::{ExpectationResult, Report, ServiceImpact};
use super::{RunArgs, run};
use crate::clock::short_duration;
use crate::scenario;
use crate::state::{Variant, Verdict};

/// `cascade compare` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Scenario name (in scenarios/) or path to a .toml file.
    pub scenario: String,
    /// Comma-separated variants: `baseline` (the scenario as written) and
    /// any remediation.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1.., long_help = variants_help())]
    pub variants: Vec<String>,
    /// Directory for compare.json and each variant's report (default:
    /// cascade-reports/<scenario>-compare-<unix time>).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Override the scenario's time scale (incident seconds per wall second).
    #[arg(long, value_parser = cascade_core::parse::parse_time_scale)]
    pub time_scale: Option<f64>,
    /// Override the scenario's seed (the same for every variant).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop every variant's run at this incident clock (e.g. 08:30).
    #[arg(long, value_parser = super::parse_until)]
    pub until: Option<String>,
}

fn variants_help() -> String {
    format!(
        "Comma-separated variants: `baseline` (the scenario as written) and any remediation: {}",
        crate::state::Remediation::names()
    )
}

/// `compare.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareDoc {
    /// The scenario's name.
    pub scenario: String,
    /// Per variant, the gist of its report.
    pub variants: BTreeMap<String, VariantResult>,
}

/// One variant's result in `compare.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariantResult {
    /// Its verdict.
    pub verdict: Verdict,
    /// Where its report.json is.
    pub report: PathBuf,
    /// Per service, its impact.
    pub services: BTreeMap<String, ServiceImpact>,
    /// Services in the order they were first impaired.
    pub impaired_order: Vec<String>,
    /// Its expectations.
    pub expectations: Vec<ExpectationResult>,
}

/// Checks the variant names: `baseline` or a known remediation, no repeats.
pub fn check_variants(v: &[String]) -> Result<Vec<Variant>, String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for name in v {
        let variant: Variant = name.parse().map_err(|e| format!("--variants: {e}"))?;
        if !seen.insert(variant.name()) {
            return Err(format!("--variants: {name:?} is listed twice"));
        }
        out.push(variant);
    }
    Ok(out)
}

/// Runs the scenario once per variant (one after the other, each with its
/// own report directory and fleet), then prints the blast-radius table and
/// writes `compare.json`. Exit code 0 when every variant ran to its end
/// (a variant's failed expectations are its result, not an error), 130 on
/// Ctrl-C.
pub async fn compare(
    args: CompareArgs,
    loaded: scenario::Loaded,
    dir: PathBuf,
    shutdown: CancellationToken,
) -> anyhow::Result<u8> {
    let variants = check_variants(&args.variants).map_err(anyhow::Error::msg)?;
    let mut results: Vec<(Variant, Report)> = Vec::new();
    let total = variants.len();
    for (n, variant) in variants.into_iter().enumerate() {
        let mut l = loaded.clone();
        if let Variant::With(r) = variant
            && !l.scenario.topology.remediations.contains(&r)
        {
            l.scenario.topology.remediations.push(r);
        }
        let vdir = dir.join(variant.name());
        out(format_args!(
            "[{}/{total}] {variant}: running {} (report in {})",
            n + 1,
            l.scenario.scenario.name,
            vdir.display()
        ));
        let run_args = RunArgs {
            scenario: args.scenario.clone(),
            report: Some(vdir.clone()),
            time_scale: args.time_scale,
            seed: args.seed,
            quiet: true,
            json: false,
            attach: false,
            remediations: Vec::new(),
            until: args.until.clone(),
        };
        let started = Instant::now();
        let report = run(run_args, l, vdir, shutdown.clone()).await?;
        out(format_args!(
            "[{}/{total}] {variant}: verdict {} in {:.0} s",
            n + 1,
            report.verdict,
            started.elapsed().as_secs_f64()
        ));
        let aborted = report.verdict == Verdict::Aborted;
        results.push((variant, report));
        if aborted || shutdown.is_cancelled() {
            out(format_args!(
                "interrupted; the variants that ran are in {}",
                dir.display()
            ));
            return Ok(130);
        }
    }
    let table = blast_radius(&results);
    out(format_args!("\n{table}"));
    let doc = CompareDoc {
        scenario: loaded.scenario.scenario.name.clone(),
        variants: results
            .iter()
            .map(|(v, r)| {
                let result = VariantResult {
                    verdict: r.verdict,
                    report: dir.join(v.name()).join("report.json"),
                    services: r.services.clone(),
                    impaired_order: r.impaired_order.clone(),
                    expectations: r.expectations.clone(),
                };
                (v.name().to_owned(), result)
            })
            .collect(),
    };
    std::fs::write(dir.join("compare.json"), serde_json::to_vec_pretty(&doc)?)?;
    std::fs::write(dir.join("compare.txt"), &table)?;
    out(format_args!(
        "compare.json, compare.txt and each variant's report: {}",
        dir.display()
    ));
    Ok(0)
}

/// The blast-radius table: per service and variant, whether it was
/// impaired, for how long (incident time) and its peak error rate.
pub fn blast_radius(results: &[(Variant, Report)]) -> String {
    let mut services: Vec<&String> = Vec::new();
    for (_, r) in results {
        for k in r.services.keys() {
            if !services.contains(&k) {
                services.push(k);
            }
        }
    }
    let cell = |r: &Report, svc: &str| -> String {
        let Some(v) = r.services.get(svc) else {
            return "-".into();
        };
        let peak = v.max_error_rate * 100.0;
        match v.impaired_at_s {
            None => format!("no ({peak:.0}%)"),
            Some(_) => {
                let open = if v.recovered_at_s.is_none() { "+" } else { "" };
                format!(
                    "YES {}{open} {peak:.0}%",
                    short_duration(v.impaired_s * r.time_scale)
                )
            }
        }
    };
    let mut out = String::new();
    let w = 22;
    let _ = write!(out, "{:<14}", "blast radius");
    for (v, _) in results {
        let _ = write!(out, "{:<w$}", v.name());
    }
    out.push('\n');
    for svc in &services {
        let _ = write!(out, "{svc:<14}");
        for (_, r) in results {
            let _ = write!(out, "{:<w$}", cell(r, svc));
        }
        out.push('\n');
    }
    let _ = write!(out, "{:<14}", "verdict");
    for (_, r) in results {
        let _ = write!(out, "{:<w$}", r.verdict.as_str());
    }
    out.push_str(
        "\n(YES <incident time impaired> <peak error rate>; + = still impaired at the end; no = never impaired)\n",
    );
    out
}
