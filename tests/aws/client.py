#!/usr/bin/env python3
"""Real AWS clients (boto3, the AWS CLI, a raw CBOR request) against the
fleet's balanced AWS Kinesis endpoint. Driven by tests/tests/aws_api.rs:

    client.py PHASE ENDPOINT STATE_FILE

Each phase asserts what it expects and exits non-zero (with the reason) if
it does not hold. STATE_FILE carries the acknowledged records between
phases (JSON), so the recovery phase can check none was lost.
"""
import base64
import json
import os
import subprocess
import sys
import time
import urllib.request

import boto3
import botocore.exceptions
import cbor2
from botocore.config import Config

PHASE, ENDPOINT, STATE = sys.argv[1], sys.argv[2], sys.argv[3]
STREAM = "app-orders"
ENV = {
    "AWS_ACCESS_KEY_ID": "cascade",
    "AWS_SECRET_ACCESS_KEY": "cascade",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ENDPOINT_URL": ENDPOINT,
}


def client(retries=None):
    cfg = Config(retries=retries, connect_timeout=5, read_timeout=40) if retries else Config(
        connect_timeout=5, read_timeout=40)
    return boto3.client(
        "kinesis",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="cascade",
        aws_secret_access_key="cascade",
        config=cfg,
    )


NO_RETRIES = {"max_attempts": 1, "mode": "standard"}
DEFAULT_RETRIES = {"mode": "standard"}  # 3 attempts, as the SDK defaults


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def error_of(call):
    try:
        call()
    except botocore.exceptions.ClientError as e:
        return e.response
    return None


def load():
    with open(STATE) as f:
        return json.load(f)


def save(state):
    with open(STATE, "w") as f:
        json.dump(state, f)


def read_all(k):
    """Every record of the stream, via TRIM_HORIZON iterators."""
    out = []
    for shard in k.list_shards(StreamName=STREAM)["Shards"]:
        it = k.get_shard_iterator(StreamName=STREAM, ShardId=shard["ShardId"],
                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while True:
            r = k.get_records(ShardIterator=it, Limit=1000)
            out += [(shard["ShardId"], x["SequenceNumber"], x["Data"].hex()) for x in r["Records"]]
            it = r["NextShardIterator"]
            if not r["Records"]:
                break
    return out


def aws_cli(*args):
    env = dict(os.environ, **ENV)
    p = subprocess.run(["aws", "kinesis", *args, "--output", "json"], env=env,
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, f"aws kinesis {' '.join(args)} (stderr: {p.stderr.strip()})")
    return json.loads(p.stdout) if p.stdout.strip() else {}


def cbor_call(op, body):
    req = urllib.request.Request(
        ENDPOINT + "/", data=cbor2.dumps(body), method="POST",
        headers={
            "Content-Type": "application/x-amz-cbor-1.1",
            "X-Amz-Target": "Kinesis_20131202." + op,
            "Authorization": "AWS4-HMAC-SHA256 Credential=cascade/20201125/us-east-1/kinesis/aws4_request, "
                             "SignedHeaders=host;x-amz-date, Signature=0",
        })
    with urllib.request.urlopen(req, timeout=30) as r:
        check(r.headers["Content-Type"] == "application/x-amz-cbor-1.1", f"CBOR {op} answers in CBOR")
        return cbor2.loads(r.read())


def raw_json(headers, body):
    req = urllib.request.Request(ENDPOINT + "/", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def healthy():
    k = client(NO_RETRIES)
    k.create_stream(StreamName=STREAM, ShardCount=2)
    k.get_waiter("stream_exists").wait(StreamName=STREAM, WaiterConfig={"Delay": 1, "MaxAttempts": 20})
    check(k.describe_stream_summary(StreamName=STREAM)["StreamDescriptionSummary"]["OpenShardCount"] == 2,
          "the waiter saw the stream ACTIVE with 2 shards")
    desc = k.describe_stream(StreamName=STREAM, Limit=1)["StreamDescription"]
    check(desc["HasMoreShards"] and len(desc["Shards"]) == 1, "DescribeStream pages shards (HasMoreShards)")
    names = k.list_streams(Limit=1000)["StreamNames"]
    check(STREAM in names, "ListStreams lists the stream")
    first = k.list_streams(Limit=1)
    paged = [n for page in k.get_paginator("list_streams").paginate(PaginationConfig={"PageSize": 1})
             for n in page["StreamNames"]]
    check(first["HasMoreStreams"] == (len(names) > 1) and paged == names,
          f"ListStreams pages one stream at a time (HasMoreStreams, NextToken): {paged}")
    # As AWS: a NextToken call names no stream (the token does).
    page = k.list_shards(StreamName=STREAM, MaxResults=1)
    shards = [s["ShardId"] for s in page["Shards"]]
    page = k.list_shards(NextToken=page["NextToken"], MaxResults=1)
    shards += [s["ShardId"] for s in page["Shards"]]
    check(shards == ["shardId-000000000000", "shardId-000000000001"] and "NextToken" not in page,
          f"ListShards pages by NextToken: {shards}")
    e = error_of(lambda: k.list_shards(StreamName=STREAM, NextToken="x"))
    check(e is not None and e["Error"]["Code"] == "InvalidArgumentException",
          "ListShards refuses NextToken with StreamName, as AWS")
    k.create_stream(StreamName="short-lived", ShardCount=1)
    k.delete_stream(StreamName="short-lived")
    # As on AWS, deletion is eventually consistent (there the stream is
    # DELETING for a while; here each front-end's map drops it when it reads
    # the new metadata). Poll for 20 s until five calls in a row, spread by
    # the balancer over the front-ends, no longer see it.
    def gone():
        e = error_of(lambda: k.describe_stream_summary(StreamName="short-lived"))
        listed = "short-lived" in k.list_streams()["StreamNames"]
        code = e["Error"]["Code"] if e else "found"
        return code == "ResourceNotFoundException" and not listed, (code, listed)
    deadline, in_a_row, last = time.time() + 20, 0, None
    while in_a_row < 5 and time.time() < deadline:
        ok, last = gone()
        in_a_row = in_a_row + 1 if ok else 0
        if not ok:
            time.sleep(0.2)
    check(in_a_row >= 5, f"DeleteStream removes the stream (last seen: describe {last[0]}, listed {last[1]})")
    acked = []
    r = k.put_record(StreamName=STREAM, Data=b"first", PartitionKey="p0")
    acked.append([r["ShardId"], r["SequenceNumber"], b"first".hex()])
    # botocore may send whole epoch seconds: leave a full second between the
    # first record and the AT_TIMESTAMP point, so truncation cannot cross it.
    time.sleep(1.2)
    t_mid = time.time()
    r = k.put_records(StreamName=STREAM, Records=[
        {"Data": f"batch-{i}".encode(), "PartitionKey": f"p{i}"} for i in range(20)])
    check(r["FailedRecordCount"] == 0 and len(r["Records"]) == 20, "PutRecords stored 20 records")
    for i, x in enumerate(r["Records"]):
        acked.append([x["ShardId"], x["SequenceNumber"], f"batch-{i}".encode().hex()])
    got = read_all(k)
    check(sorted(map(tuple, acked)) == sorted(got), f"GetRecords reads back all {len(acked)} records")
    shard0 = acked[0][0]
    seq0 = acked[0][1]
    at = k.get_shard_iterator(StreamName=STREAM, ShardId=shard0, ShardIteratorType="AT_SEQUENCE_NUMBER",
                              StartingSequenceNumber=seq0)["ShardIterator"]
    check(k.get_records(ShardIterator=at)["Records"][0]["Data"] == b"first", "AT_SEQUENCE_NUMBER")
    after = k.get_shard_iterator(StreamName=STREAM, ShardId=shard0, ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                                 StartingSequenceNumber=seq0)["ShardIterator"]
    check(all(x["Data"] != b"first" for x in k.get_records(ShardIterator=after)["Records"]),
          "AFTER_SEQUENCE_NUMBER skips it")
    latest = k.get_shard_iterator(StreamName=STREAM, ShardId=shard0, ShardIteratorType="LATEST")["ShardIterator"]
    lr = k.get_records(ShardIterator=latest)
    check(lr["Records"] == [] and lr["MillisBehindLatest"] == 0 and lr["NextShardIterator"],
          "LATEST reads nothing old, MillisBehindLatest 0")
    ts = k.get_shard_iterator(StreamName=STREAM, ShardId=shard0, ShardIteratorType="AT_TIMESTAMP",
                              Timestamp=t_mid)["ShardIterator"]
    check(all(x["Data"] != b"first" for x in k.get_records(ShardIterator=ts)["Records"]),
          "AT_TIMESTAMP starts after the earlier record")

    # The AWS CLI.
    check(STREAM in aws_cli("list-streams")["StreamNames"], "aws kinesis list-streams")
    check(aws_cli("describe-stream", "--stream-name", STREAM)["StreamDescription"]["StreamStatus"] == "ACTIVE",
          "aws kinesis describe-stream")
    it = aws_cli("get-shard-iterator", "--stream-name", STREAM, "--shard-id", shard0,
                 "--shard-iterator-type", "TRIM_HORIZON")["ShardIterator"]
    recs = aws_cli("get-records", "--shard-iterator", it)["Records"]
    check(base64.b64decode(recs[0]["Data"]) == b"first", "aws kinesis get-records")

    # CBOR round trip.
    put = cbor_call("PutRecord", {"StreamName": STREAM, "Data": b"\x00cbor\xff", "PartitionKey": "c"})
    acked.append([put["ShardId"], put["SequenceNumber"], b"\x00cbor\xff".hex()])
    it = cbor_call("GetShardIterator", {"StreamName": STREAM, "ShardId": put["ShardId"],
                                        "ShardIteratorType": "AT_SEQUENCE_NUMBER",
                                        "StartingSequenceNumber": put["SequenceNumber"]})["ShardIterator"]
    rec = cbor_call("GetRecords", {"ShardIterator": it})["Records"][0]
    check(rec["Data"] == b"\x00cbor\xff" and isinstance(rec["ApproximateArrivalTimestamp"], int),
          "CBOR PutRecord/GetRecords round trip (bytes, epoch-ms timestamp)")
    save({"acked": acked})


def bad_requests():
    k = client(NO_RETRIES)
    before = read_all(k)
    streams_before = k.list_streams()["StreamNames"]
    cases = [
        ("describe a missing stream", lambda: k.describe_stream(StreamName="no-such-stream"),
         "ResourceNotFoundException", 400),
        ("create an existing stream", lambda: k.create_stream(StreamName=STREAM, ShardCount=1),
         "ResourceInUseException", 400),
        ("a record over 1 MiB", lambda: k.put_record(StreamName=STREAM, Data=b"x" * (1024 * 1024 + 1),
                                                      PartitionKey="k"), "ValidationException", 400),
        ("a partition key over 256 characters",
         lambda: k.put_records(StreamName=STREAM, Records=[{"Data": b"ok", "PartitionKey": "k"},
                                                           {"Data": b"x", "PartitionKey": "k" * 257}]),
         "ValidationException", 400),
        ("a malformed iterator", lambda: k.get_records(ShardIterator="not-an-iterator"),
         "InvalidArgumentException", 400),
        ("AT_SEQUENCE_NUMBER without a sequence number",
         lambda: k.get_shard_iterator(StreamName=STREAM, ShardId="shardId-000000000000",
                                      ShardIteratorType="AT_SEQUENCE_NUMBER"), "InvalidArgumentException", 400),
        ("a missing shard", lambda: k.get_shard_iterator(StreamName=STREAM, ShardId="shardId-000000000099",
                                                          ShardIteratorType="LATEST"),
         "ResourceNotFoundException", 400),
    ]
    for what, call, code, status in cases:
        e = error_of(call)
        check(e is not None and e["Error"]["Code"] == code and e["ResponseMetadata"]["HTTPStatusCode"] == status,
              f"{what}: {code} {status} (got {e and e['Error']})")
    auth = "AWS4-HMAC-SHA256 Credential=a/20201125/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=0"
    raw = [
        ("no Authorization", {"X-Amz-Target": "Kinesis_20131202.ListStreams",
                              "Content-Type": "application/x-amz-json-1.1"}, b"{}",
         "MissingAuthenticationTokenException", 403),
        ("a malformed body", {"X-Amz-Target": "Kinesis_20131202.PutRecord", "Authorization": auth,
                              "Content-Type": "application/x-amz-json-1.1"}, b"{not json",
         "SerializationException", 400),
        ("an unknown operation", {"X-Amz-Target": "Kinesis_20131202.SplitTheAtom", "Authorization": auth,
                                  "Content-Type": "application/x-amz-json-1.1"}, b"{}",
         "UnknownOperationException", 400),
    ]
    for what, headers, body, code, status in raw:
        st, h, b = raw_json(headers, body)
        check(st == status and json.loads(b)["__type"] == code and h.get("x-amzn-ErrorType") == code,
              f"{what}: {code} {status} in body and x-amzn-ErrorType (got {st} {b[:200]!r})")
    check(read_all(k) == before and k.list_streams()["StreamNames"] == streams_before,
          "bad requests changed nothing")


def outage():
    for retries, label in [(NO_RETRIES, "retries off"), (DEFAULT_RETRIES, "default retries")]:
        k = client(retries)
        for what, call in [
            ("PutRecord", lambda: k.put_record(StreamName=STREAM, Data=b"lost?", PartitionKey="p")),
            ("PutRecords", lambda: k.put_records(StreamName=STREAM, Records=[{"Data": b"x", "PartitionKey": "p"}])),
            ("GetShardIterator", lambda: k.get_shard_iterator(StreamName=STREAM, ShardId="shardId-000000000000",
                                                              ShardIteratorType="TRIM_HORIZON")),
        ]:
            e = error_of(call)
            check(e is not None and e["Error"]["Code"] == "ServiceUnavailable"
                  and e["ResponseMetadata"]["HTTPStatusCode"] == 503
                  and "shard map" in e["Error"]["Message"],
                  f"{label}: {what} fails ServiceUnavailable naming the shard map (got {e and e['Error']})")
            if retries is DEFAULT_RETRIES:
                check(e["ResponseMetadata"]["RetryAttempts"] >= 1, f"{label}: {what} was retried")


def recovered():
    k = client(DEFAULT_RETRIES)
    r = k.put_record(StreamName=STREAM, Data=b"after", PartitionKey="p0")
    acked = load()["acked"]
    got = {(s, q) for s, q, _ in read_all(k)}
    check((r["ShardId"], r["SequenceNumber"]) in got, "PutRecord works again after recovery")
    got_full = {tuple(x) for x in read_all(k)}
    lost = [a for a in acked if tuple(a) not in got_full]
    check(not lost, f"no acknowledged record lost ({len(acked)} checked; lost: {lost})")


def one_down():
    # Until the health loop's next look (at most 500 ms after the watch saw
    # it down) the killed front-end can still be picked: those calls get a
    # 502, which the SDK retries (5 attempts, as many applications set).
    k = client({"mode": "standard", "max_attempts": 5})
    for i in range(30):
        k.put_record(StreamName=STREAM, Data=f"one-down-{i}".encode(), PartitionKey=f"k{i}")
    check(True, "30 PutRecord calls succeeded with one front-end killed")


def throttled():
    """One front-end, 4 worker slots, each data-plane call holding one for
    the modelled request cost: 12 concurrent PutRecords cannot all get a
    slot within the slot wait."""
    from concurrent.futures import ThreadPoolExecutor
    k = client(NO_RETRIES)
    k.create_stream(StreamName="busy", ShardCount=1)
    k.get_waiter("stream_exists").wait(StreamName="busy", WaiterConfig={"Delay": 1, "MaxAttempts": 20})

    def put(i):
        c = client(NO_RETRIES)
        try:
            r = c.put_record(StreamName="busy", Data=f"busy-{i}".encode(), PartitionKey=f"k{i}")
            return ("ok", r["SequenceNumber"])
        except botocore.exceptions.ClientError as e:
            return (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(put, range(12)))
    codes = [r[0] for r in results]
    check("ok" in codes, f"some calls got a worker slot ({codes})")
    check(("ProvisionedThroughputExceededException", 400) in results,
          f"the rest are throttled: ProvisionedThroughputExceededException 400 ({results})")
    check(set(codes) <= {"ok", "ProvisionedThroughputExceededException"}, f"nothing else ({codes})")
    stored = [x for x in read_all_of(client(DEFAULT_RETRIES), "busy")]
    check(len(stored) == codes.count("ok"),
          f"exactly the acknowledged records are stored ({len(stored)} stored, {codes.count('ok')} acknowledged)")


def read_all_of(k, stream):
    it = k.get_shard_iterator(StreamName=stream, ShardId="shardId-000000000000",
                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    return k.get_records(ShardIterator=it)["Records"]


{"throttled": throttled, "healthy": healthy, "bad": bad_requests, "outage": outage, "recovered": recovered,
 "one-down": one_down}[PHASE]()
