//! The live dashboard inside the supervisor: `/metrics` parsed by a real
//! exposition parser agrees with `status --json`; `/events` delivers every
//! frame in order and a reconnect with `Last-Event-ID` loses none; the
//! controls work and refuse bad values with the CLI's message; the page
//! shows the fleet; and the HTTP server stops with the supervisor.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::Duration;

use cascade::state::MapState;
use cascade::status::Status;
use cascade_tests::http::{self, Sse};
use cascade_tests::{Fleet, describe, eventually, status};

const UP: Duration = Duration::from_secs(90);

/// The dashboard's base URL (`endpoints.dashboard`), with `/metrics`
/// checked to be beside it.
fn dashboard(s: &Status) -> String {
    let d = s
        .endpoints
        .dashboard
        .clone()
        .unwrap_or_else(|| panic!("status names no dashboard:\n{}", status::pretty(s)));
    assert!(
        d.starts_with("http://127.0.0.1:") && d.ends_with('/'),
        "{d}"
    );
    assert_eq!(
        s.endpoints.metrics.as_deref(),
        Some(format!("{d}metrics").as_str())
    );
    d
}

/// `name{label="v",...}` with labels sorted, the key both sides use.
fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<_> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    l.sort();
    format!("{name}{{{}}}", l.join(","))
}

/// Every scalar sample of a scrape, by [`key`]; histograms by their `_count`.
fn scrape(url: &str) -> Result<BTreeMap<String, f64>, String> {
    let r = http::get(url)?;
    if r.code != 200 {
        return Err(format!("{url}: {} {}", r.code, r.body));
    }
    let lines = r.body.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).map_err(|e| format!("parse: {e}"))?;
    let mut out = BTreeMap::new();
    for s in parsed.samples {
        let labels: Vec<(&str, &str)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(key(&s.metric, &labels), v);
    }
    Ok(out)
}

/// What `/metrics` must carry for `s`, derived from the status document.
fn expected(s: &Status) -> BTreeMap<String, f64> {
    let mut e = BTreeMap::new();
    if let Some(l) = s.thread_limit.limit {
        e.insert(
            key(
                "cascade_thread_limit",
                &[("enforcement", &s.thread_limit.enforcement)],
            ),
            l as f64,
        );
    }
    for m in [
        MapState::Ready,
        MapState::Building,
        MapState::Unusable,
        MapState::Down,
    ] {
        e.insert(
            key("cascade_shard_maps", &[("state", m.as_str())]),
            s.count_maps(m) as f64,
        );
    }
    for f in &s.frontends {
        let l = [("frontend", f.name.as_str()), ("fleet", f.fleet.as_str())];
        let mut put = |name: &str, v: f64| e.insert(key(name, &l), v);
        put("cascade_frontend_threads", f64::from(f.threads));
        put("cascade_frontend_base_threads", f64::from(f.base_threads));
        put("cascade_frontend_peers_known", f64::from(f.peers_known));
        put("cascade_frontend_peers_total", f64::from(f.peers_total));
        put("cascade_frontend_peer_threads", f64::from(f.peer_threads));
        put(
            "cascade_frontend_spawn_failures_total",
            f.spawn_failures as f64,
        );
        if let Some(tl) = f.thread_limit {
            put("cascade_frontend_thread_limit", tl as f64);
        }
        if let Some(n) = f.cgroup_pids_events_max {
            put("cascade_frontend_cgroup_pids_events_max_total", n as f64);
        }
        for m in [
            MapState::Ready,
            MapState::Building,
            MapState::Unusable,
            MapState::Down,
        ] {
            e.insert(
                key(
                    "cascade_frontend_shard_map",
                    &[l[0], l[1], ("state", m.as_str())],
                ),
                if f.shard_map == m { 1.0 } else { 0.0 },
            );
        }
    }
    for svc in &s.services {
        for h in ["serving", "degraded", "down"] {
            e.insert(
                key(
                    "cascade_service_health",
                    &[("service", &svc.name), ("state", h)],
                ),
                if svc.health.as_str() == h { 1.0 } else { 0.0 },
            );
        }
    }
    e.insert(key("cascade_faults_active", &[]), 0.0);
    e
}

#[test]
fn metrics_agree_with_status_json_and_the_server_stops_with_the_supervisor() {
    let fleet = Fleet::up(
        "dash-metrics",
        &[
            "--services",
            "kinesis,cognito",
            "--frontends",
            "3",
            "--thread-limit",
            "64",
            "--time-scale",
            "3600",
            "--traffic-rate",
            "20",
        ],
    );
    let s = fleet.wait_status("a full mesh of 3", UP, |s| status::full_mesh(s, 3));
    let base = dashboard(&s);
    let metrics = format!("{base}metrics");
    // A scrape between two equal statuses must equal them, value for value.
    let m = eventually("a /metrics scrape between two equal statuses", UP, || {
        let s1 = fleet.try_status()?;
        let m = scrape(&metrics)?;
        let s2 = fleet.try_status()?;
        let (e1, e2) = (expected(&s1), expected(&s2));
        if e1 != e2 {
            return Err("the status changed during the scrape; again".into());
        }
        for (k, v) in &e1 {
            assert_eq!(
                m.get(k),
                Some(v),
                "/metrics {k} disagrees with status --json\nstatus:\n{}\nmetrics: {m:#?}",
                status::pretty(&s1)
            );
        }
        Ok(m)
    });
    // Customer calls are counted as they end, and their latency kept as a histogram.
    let calls = eventually("cognito calls counted", UP, || {
        let m = scrape(&metrics)?;
        let ok = m
            .get(&key(
                "cascade_call_total",
                &[("service", "cognito"), ("code", "OK")],
            ))
            .copied()
            .unwrap_or(0.0);
        let lat = m
            .get(&key(
                "cascade_call_latency_seconds_count",
                &[("service", "cognito")],
            ))
            .copied()
            .unwrap_or(0.0);
        if ok > 0.0 && lat >= ok {
            Ok((ok, lat))
        } else {
            Err(format!("ok {ok}, latency count {lat}"))
        }
    });
    assert!(calls.0 > 0.0, "{m:?}");

    // The HTTP server stops with the supervisor: nothing listens after `down`.
    let (host, _) = http::split(&base);
    let run_id = fleet.run_id();
    fleet.ok(&["down"]);
    eventually(
        "the dashboard port closed",
        Duration::from_secs(10),
        || match TcpStream::connect(&host) {
            Ok(_) => Err(format!("{host} still accepts connections")),
            Err(_) => Ok(()),
        },
    );
    fleet.assert_nothing_left(&run_id);
}

/// A frame's id and main-fleet shard-map states, from its JSON.
fn frame(ev: &http::SseEvent) -> (u64, Status) {
    let v: serde_json::Value = serde_json::from_str(&ev.data)
        .unwrap_or_else(|e| panic!("event {} is not JSON ({e}): {}", ev.id, ev.data));
    let id = v["id"].as_u64().expect("frame id");
    assert_eq!(ev.id, id.to_string(), "the event id is the frame's");
    let st: Status = serde_json::from_value(v["status"].clone()).expect("frame status");
    (id, st)
}

#[test]
fn events_arrive_in_order_and_a_reconnect_loses_none() {
    let n = 6usize;
    let base_threads = cascade_tests::learn_base_threads("dash-sse-base", UP) as u64;
    // Room for peers in a fleet of n, not of n + 2: adding two tips it.
    let limit = base_threads + n as u64 - 1;
    let limit_s = limit.to_string();
    let n_s = n.to_string();
    let fleet = Fleet::up(
        "dash-sse",
        &[
            "--services",
            "kinesis",
            "--frontends",
            &n_s,
            "--thread-limit",
            &limit_s,
            "--time-scale",
            "3600",
            "--traffic-rate",
            "0",
        ],
    );
    let s = fleet.wait_status("a full mesh", UP, |s| status::full_mesh(s, n));
    let events = format!("{}events", dashboard(&s));
    let mut sse = Sse::open(&events, None).expect("open /events");
    let first = sse.next(Duration::from_secs(10)).expect("a first frame");
    let (mut last, st) = frame(&first);
    assert_eq!(first.event, "frame");
    assert_eq!(
        st.count_maps(MapState::Ready),
        n,
        "connected before the tip"
    );

    fleet.ok(&["add-capacity", "2"]);
    // Every frame arrives, ids consecutive; no main-fleet map goes back
    // from unusable; until every map is unusable.
    let mut unusable_at = BTreeMap::new();
    let mut seen = Vec::new();
    let tipped = eventually("every map unusable over /events", UP, || {
        let ev = sse.next(Duration::from_secs(10))?;
        let (id, st) = frame(&ev);
        assert_eq!(id, last + 1, "frames arrive in order, none lost");
        last = id;
        for f in st.main_fleet() {
            if f.shard_map == MapState::Unusable {
                unusable_at.entry(f.name.clone()).or_insert(id);
            } else if let Some(at) = unusable_at.get(&f.name) {
                panic!(
                    "{} was unusable at frame {at} but {} at {id}",
                    f.name, f.shard_map
                );
            }
        }
        seen.push(st.count_maps(MapState::Unusable));
        if st.count_maps(MapState::Unusable) == n + 2 {
            Ok(id)
        } else {
            Err(format!("frame {id}: unusable counts so far {seen:?}"))
        }
    });
    assert!(
        seen.first().copied().unwrap_or(0) < n + 2,
        "the client saw the change happen, not only its end: {seen:?}"
    );

    // Drop the connection, let frames pass, reconnect naming the last seen.
    drop(sse);
    std::thread::sleep(Duration::from_millis(1500));
    let mut again = Sse::open(&events, Some(&tipped.to_string())).expect("reconnect");
    let mut ids = Vec::new();
    for _ in 0..4 {
        let ev = again
            .next(Duration::from_secs(10))
            .expect("a replayed frame");
        ids.push(frame(&ev).0);
    }
    let want: Vec<u64> = (tipped + 1..tipped + 5).collect();
    assert_eq!(
        ids, want,
        "the reconnect resumes right after the last event seen"
    );
}

#[test]
fn controls_work_and_refuse_bad_values_with_the_cli_message() {
    let fleet = Fleet::up(
        "dash-controls",
        &[
            "--services",
            "kinesis,cognito",
            "--frontends",
            "2",
            "--thread-limit",
            "64",
            "--time-scale",
            "3600",
            "--traffic-rate",
            "0",
        ],
    );
    let s = fleet.wait_status("a full mesh of 2", UP, |s| status::full_mesh(s, 2));
    let base = dashboard(&s);
    let token = fleet
        .home
        .token()
        .expect("supervisor.json holds the run's token");
    let post = |path: &str, fields: &[(&str, &str)]| {
        http::post_form_with(&format!("{base}api/{path}"), fields, Some(&token))
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    };
    // Without the token, or with a wrong one: 401, and nothing changes.
    for bad in [None, Some("nope")] {
        for path in [
            "add-capacity",
            "remove-capacity",
            "restart-frontends",
            "configure",
            "clear-faults",
        ] {
            let r = http::post_form_with(&format!("{base}api/{path}"), &[("count", "1")], bad)
                .unwrap_or_else(|e| panic!("POST {path}: {e}"));
            assert_eq!(r.code, 401, "{path} with {bad:?}: {}", r.body);
        }
    }
    assert_eq!(fleet.status().frontends.len(), 2, "nothing changed");
    let message = |r: &http::Response| -> String {
        let v: serde_json::Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {}", r.body));
        v["message"].as_str().unwrap_or_default().to_owned()
    };

    // add-capacity
    let r = post("add-capacity", &[("count", "1")]);
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(fleet.status().frontends.len(), 3);
    let r = post("add-capacity", &[("count", "0")]);
    assert_eq!(r.code, 400, "{}", r.body);
    assert_eq!(message(&r), "count: add at least 1 front-end");
    let r = post("add-capacity", &[("count", "lots")]);
    assert_eq!(r.code, 400, "{}", r.body);
    assert!(message(&r).starts_with("count:"), "{}", r.body);
    assert_eq!(
        fleet.status().frontends.len(),
        3,
        "a refusal changes nothing"
    );

    // remove-capacity: the CLI says the same thing, and it changes nothing.
    let r = post("remove-capacity", &[("count", "3")]);
    assert_eq!(r.code, 400, "{}", r.body);
    let cli = fleet.run(&["remove-capacity", "3"]);
    assert!(!cli.status.success());
    let cli_err = String::from_utf8_lossy(&cli.stderr);
    assert!(
        cli_err.contains(&message(&r)),
        "the page shows the CLI's message {:?}; the CLI said:\n{}",
        message(&r),
        describe(&cli)
    );
    assert_eq!(
        fleet.status().frontends.len(),
        3,
        "a refusal changes nothing"
    );
    let r = post("remove-capacity", &[("count", "1")]);
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(fleet.status().frontends.len(), 2);

    // configure: a bad target is refused as the CLI refuses it.
    let r = post(
        "configure",
        &[("target", "nosuch"), ("key", "mode"), ("value", "fixed")],
    );
    assert_eq!(r.code, 400, "{}", r.body);
    let cli = fleet.run(&["configure", "nosuch", "mode", "fixed"]);
    assert!(
        String::from_utf8_lossy(&cli.stderr).contains(&message(&r)),
        "{}\n{}",
        r.body,
        describe(&cli)
    );
    let r = post(
        "configure",
        &[("target", "cognito"), ("key", "mode"), ("value", "fixed")],
    );
    assert_eq!(r.code, 200, "{}", r.body);
    assert!(message(&r).contains("cognito-0"), "{}", r.body);
    fleet.wait_until("the remediation in force", UP, |s| {
        Ok(status::try_gauge(s, "cognito", "mode")? == "fixed")
    });

    // clear-faults: an unknown id is refused; one fault is cleared.
    let r = post("clear-faults", &[("id", "f-99")]);
    assert_eq!(r.code, 400, "{}", r.body);
    let cli = fleet.run(&["clear", "f-99"]);
    assert!(
        String::from_utf8_lossy(&cli.stderr).contains(&message(&r)),
        "{}\n{}",
        r.body,
        describe(&cli)
    );
    fleet.ok(&[
        "inject",
        "latency",
        "--target",
        "cognito",
        "--latency",
        "10ms",
    ]);
    let r = post("clear-faults", &[]);
    assert_eq!(r.code, 200, "{}", r.body);
    assert!(message(&r).starts_with("reverted f-"), "{}", r.body);
    assert!(fleet.ok(&["faults"]).contains("no active faults"));

    // restart-frontends: batch 0 refused; a restart runs and the fleet
    // comes back ready with new processes.
    let r = post("restart-frontends", &[("batch", "0")]);
    assert_eq!(r.code, 400, "{}", r.body);
    assert_eq!(message(&r), "batch: restart at least 1 front-end at a time");
    let before: Vec<u32> = fleet.status().frontends.iter().map(|f| f.pid).collect();
    let r = post("restart-frontends", &[("batch", "1"), ("grace", "20s")]);
    assert_eq!(r.code, 202, "{}", r.body);
    fleet.wait_status("every front-end restarted and ready", UP, |s| {
        status::full_mesh(s, 2) && s.frontends.iter().all(|f| !before.contains(&f.pid))
    });
}

/// The Chromium binary (`CHROMIUM` or `chromium` on the PATH); the test
/// fails, saying how to install it, when there is none.
fn chromium() -> String {
    let bin = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
    match std::process::Command::new(&bin).arg("--version").output() {
        Ok(o) if o.status.success() => bin,
        other => panic!(
            "headless Chromium is needed for this test and `{bin} --version` failed ({other:?}); \
             install it with `apt-get install -y chromium` (.ci/run does) or set CHROMIUM"
        ),
    }
}

/// Runs headless Chromium on `url` with `args`; returns its stdout.
fn headless(bin: &str, profile: &std::path::Path, url: &str, args: &[String]) -> String {
    let mut child = std::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,800",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {bin}: {e}"));
    let status =
        cascade_tests::wait_exit(&mut child, "chromium to finish", Duration::from_secs(60));
    let out = child.wait_with_output().expect("chromium output");
    assert!(
        status.success(),
        "{bin} {args:?} {url} failed: {status}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page as Chromium renders it (DOM), and a 1280x800 screenshot at `png`.
fn load(url: &str, png: &std::path::Path) -> String {
    let bin = chromium();
    let profile = png.with_extension("profile");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = headless(&bin, &profile, url, &["--dump-dom".to_owned()]);
    headless(
        &bin,
        &profile,
        url,
        &[format!("--screenshot={}", png.display())],
    );
    let _ = std::fs::remove_dir_all(&profile);
    let meta = std::fs::metadata(png)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert!(
        meta.len() > 10_000,
        "a real screenshot, not an empty one: {} bytes",
        meta.len()
    );
    dom
}

/// `attr="value"` occurrences in `dom`.
fn count(dom: &str, attr: &str, value: &str) -> usize {
    dom.matches(&format!("{attr}=\"{value}\"")).count()
}

/// The text of the element with `id` (up to its first tag end).
fn text_of(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let rest = &dom[at..];
    let start = rest.find('>').expect("tag end") + 1;
    let end = rest[start..].find('<').expect("text end");
    rest[start..start + end].trim().to_owned()
}

#[test]
fn headless_chromium_shows_a_healthy_fleet_then_every_front_end_unusable() {
    let out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&out_dir).expect("output dir");
    let n = 8usize;
    let base_threads = cascade_tests::learn_base_threads("dash-page-base", UP) as u64;
    let limit = base_threads + n as u64 - 1;
    let (n_s, limit_s) = (n.to_string(), limit.to_string());
    let fleet = Fleet::up(
        "dash-page",
        &[
            "--services",
            "kinesis",
            "--frontends",
            &n_s,
            "--thread-limit",
            &limit_s,
            "--time-scale",
            "3600",
        ],
    );
    let s = fleet.wait_status("a healthy full mesh", UP, |s| {
        status::full_mesh(s, n) && s.services.iter().all(|x| !x.health.is_impaired())
    });
    let url = dashboard(&s);

    let healthy = out_dir.join("healthy.png");
    let dom = load(&url, &healthy);
    assert_eq!(
        count(&dom, "data-map", "ready"),
        n,
        "every cell ready:\n{dom}"
    );
    assert_eq!(text_of(&dom, "eagain"), "0");
    assert_eq!(
        count(&dom, "data-health", "down") + count(&dom, "data-health", "degraded"),
        0,
        "{dom}"
    );

    fleet.ok(&["add-capacity", "2"]);
    let tipped = fleet.wait_status("every map unusable, Kinesis impaired", UP, |s| {
        s.count_maps(MapState::Unusable) == n + 2
            && status::service(s, "kinesis").health.is_impaired()
    });
    let png = out_dir.join("tipped.png");
    let dom = eventually("the page at the tip", UP, || {
        let dom = load(&url, &png);
        if count(&dom, "data-map", "unusable") == n + 2 {
            Ok(dom)
        } else {
            Err(format!("not every cell unusable yet:\n{dom}"))
        }
    });
    assert_eq!(count(&dom, "data-map", "ready"), 0, "{dom}");
    let eagain: u64 = text_of(&dom, "eagain").parse().expect("EAGAIN count");
    assert!(
        eagain >= tipped.main_fleet().map(|f| f.spawn_failures).sum::<u64>() && eagain > 0,
        "the page's EAGAIN {eagain}, status {}",
        status::pretty(&tipped)
    );
    assert_eq!(text_of(&dom, "maps-unusable"), (n + 2).to_string());
    // Kinesis is impaired on the graph and in the services table.
    let k = dom
        .split("data-service=\"kinesis\"")
        .skip(1)
        .map(|rest| rest.split('>').next().unwrap_or_default().to_owned())
        .collect::<Vec<_>>();
    assert!(
        k.len() >= 2 && k.iter().all(|a| !a.contains("data-health=\"serving\"")),
        "kinesis impaired in the graph and the table: {k:?}"
    );
    println!("screenshots: {} and {}", healthy.display(), png.display());
}
