//! `cloudwatch`: metrics through Kinesis, time series, alarms, and the
//! local-buffer remediation.

fn main() -> std::process::ExitCode {
    cascade_core::binary::service_main::<cloudwatch::CloudWatchConfig, _, _, _>(
        "cloudwatch",
        "CloudWatch: PutMetricData through a Kinesis stream, GetMetricData, alarms.",
        |_| Ok(()),
        |listener, config, started| cloudwatch::run(listener, config, started.shutdown),
    )
}
