//! Bad input gets a clear message and the right code, and starts nothing:
//! CLI flags (exit 2 or 64) and RPC fields (INVALID_ARGUMENT / NOT_FOUND).

use std::time::Duration;

use cascade::state::MapState;
use cascade_proto::kinesis as pb;
use cascade_proto::kinesis::kinesis_client::KinesisClient;
use cascade_tests::status::all_maps;
use cascade_tests::{Fleet, Home, describe};

fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> (tonic::Code, String) {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(s) => (s.code(), s.message().to_owned()),
    }
}

fn refused(args: &[&str], expect_in_stderr: &str) {
    let home = Home::new("badflag");
    let out = home.run(args);
    let code = out.status.code();
    assert!(
        matches!(code, Some(2) | Some(64)),
        "{args:?} must exit 2 or 64:\n{}",
        describe(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(expect_in_stderr),
        "{args:?}: stderr names the problem ({expect_in_stderr}):\n{}",
        describe(&out)
    );
    assert!(home.supervisor_pid().is_none(), "{args:?} started nothing");
    assert!(!home.dir.join("runs").exists(), "{args:?} created no run");
}

#[test]
fn invalid_flags_are_refused_before_anything_starts() {
    refused(&["up", "--thread-limit", "0"], "--thread-limit");
    refused(&["up", "--thread-limit", "lots"], "--thread-limit");
    refused(&["up", "--frontends", "0"], "--frontends");
    refused(&["up", "--frontends", "-3"], "--frontends");
    refused(&["up", "--time-scale", "0"], "--time-scale");
    refused(
        &["up", "--frontends", "512", "--thread-limit", "4096"],
        "thread limit",
    );
    refused(&["add-capacity", "-1"], "<COUNT>");
    refused(&["remove-capacity", "0"], "<COUNT>");
    refused(&["restart-frontends", "--interval", "soon"], "--interval");
    // Its 10-minute windows would last 0.42 s of wall time at 1440x.
    refused(
        &["run", "nov-25-2020", "--time-scale", "1440"],
        "--time-scale 600 or less",
    );
    refused(
        &[
            "compare",
            "nov-25-2020",
            "--variants",
            "baseline",
            "--time-scale",
            "3600",
        ],
        "--time-scale 600 or less",
    );
}

#[test]
fn bad_instances_and_rpc_fields_get_clear_errors() {
    let fleet = Fleet::kinesis("badrpc", 2, 16);
    let s = fleet.wait_status("2 ready", Duration::from_secs(20), |s| {
        all_maps(s, 2, MapState::Ready)
    });
    let out = fleet.run(&[
        "kinesis",
        "list-shards",
        "--stream-name",
        "x",
        "--endpoint",
        "kinesis-frontend-99",
    ]);
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kinesis-frontend-99"),
        "{}",
        describe(&out)
    );
    let out = fleet.run(&["remove-capacity", "2"]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "cannot remove the whole fleet:\n{}",
        describe(&out)
    );

    let addr = s.frontends[0].addr.clone();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let mut c = KinesisClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        c.create_stream(pb::CreateStreamRequest {
            stream_name: "s".into(),
            shard_count: 1,
        })
        .await
        .expect("create");
        let put = |stream: &str, key: &str, len: usize| pb::PutRecordRequest {
            stream_name: stream.into(),
            partition_key: key.into(),
            data: vec![7; len],
            explicit_hash_key: String::new(),
        };
        let (c1, m1) = code(c.put_record(put("s", "", 1)).await);
        assert_eq!(c1, tonic::Code::InvalidArgument, "{m1}");
        assert!(m1.contains("partition_key"), "{m1}");
        let (c2, m2) = code(c.put_record(put("nope", "k", 1)).await);
        assert_eq!(c2, tonic::Code::NotFound, "{m2}");
        assert!(m2.contains("nope"), "{m2}");
        let (c3, m3) = code(c.put_record(put("s", "k", 1024 * 1024 + 1)).await);
        assert_eq!(c3, tonic::Code::InvalidArgument, "{m3}");
        assert!(m3.contains("1 MiB"), "{m3}");
        c.put_record(put("s", "k", 1024 * 1024))
            .await
            .expect("exactly 1 MiB is accepted");
        let (c4, m4) = code(
            c.get_records(pb::GetRecordsRequest {
                shard_iterator: "garbage".into(),
                limit: 0,
            })
            .await,
        );
        assert_eq!(c4, tonic::Code::InvalidArgument, "{m4}");
        assert!(m4.contains("shard_iterator"), "{m4}");
        let (c5, m5) = code(
            c.get_shard_iterator(pb::GetShardIteratorRequest {
                stream_name: "s".into(),
                shard_id: "shardId-000000000009".into(),
                shard_iterator_type: pb::ShardIteratorType::TrimHorizon as i32,
                starting_sequence_number: String::new(),
                timestamp_ms: 0,
            })
            .await,
        );
        assert_eq!(c5, tonic::Code::NotFound, "{m5}");
        let (c6, m6) = code(
            c.create_stream(pb::CreateStreamRequest {
                stream_name: "t".into(),
                shard_count: 0,
            })
            .await,
        );
        assert_eq!(c6, tonic::Code::InvalidArgument, "{m6}");
    });
}

#[test]
fn scenario_files_are_checked_with_file_line_and_column() {
    let home = Home::new("scenario");
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let out = home
        .command(&["check-scenario", "nov-25-2020"])
        .env("CASCADE_SCENARIOS", &shipped)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "the shipped scenario is valid:\n{}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("02:44:00"),
        "{}",
        describe(&out)
    );

    let bad = home.dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[scenario]\nname = \"x\"\n\n[[step]]\nat = \"02:61\"\ndo = \"add-capacity\"\ncount = 1\n",
    )
    .expect("write");
    let out = home.run(&["check-scenario", bad.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:4:1") && err.contains("step[0].at") && err.contains("HH:MM"),
        "{}",
        describe(&out)
    );
}
