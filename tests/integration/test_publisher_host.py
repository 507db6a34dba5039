"""The whole path on real components: `runas-agent publish --once` (a real process, reading the local
Identity Store, signing with the endpoint's KMS stand-in, writing the local S3) in an isolated host with
its own journald, its records read back with journalctl; then an instance (`runas-agent --once`, real
useradd in the isolated host) configured with source.type s3 and the key's public half gets the new
person's account."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys

import boto3
import pytest

from runas_agent.exitcodes import Exit
from runas_agent.sources.signature import PublicKey
from tests.endpoint.directories import make_directory
from tests.hosts.namespace import REPO

pytest_plugins = ["tests.endpoint.fixtures"]
pytestmark = pytest.mark.host

REGION = "eu-west-1"
OWNER = "123456789012"  # the local endpoint's account
BUCKET = "runas-agent-snapshots-host"
URL = f"s3://{BUCKET}/runas/directory.json"
STORE = "d-1234567890"
PUBLISH = "9114977cecff4b228b611ce815bf4fcc"
JOURNALD = "/lib/systemd/systemd-journald"

# Inside the isolated host's mount namespace: a journald of its own (tmpfs on /run/systemd and
# /run/log), the command, then every runas-agent record as JSON lines into $1 once the command's
# record is there. Constant script; the output path and the command are positional arguments.
_WITH_JOURNALD = r'''
out=$1; shift
mount -t tmpfs tmpfs /run/systemd && mount -t tmpfs tmpfs /run/log || exit 96
/lib/systemd/systemd-journald >/dev/null 2>&1 &
journald=$!
tries=0
while [ ! -S /run/systemd/journal/socket ]; do
  tries=$((tries + 1)); [ "$tries" -lt 200 ] || exit 97; sleep 0.05
done
"$@"
status=$?
tries=0
while ! journalctl --no-pager -o json SYSLOG_IDENTIFIER=runas-agent >"$out" 2>/dev/null || ! grep -q PUBLISH_RESULT "$out"; do
  tries=$((tries + 1)); [ "$tries" -lt 100 ] || break; sleep 0.05
done
kill "$journald"; wait "$journald"
exit "$status"
'''


@pytest.fixture
def setup(identitystore_endpoint, isolated_host, tmp_path):
    if not shutil.which("journalctl") or not os.path.exists(JOURNALD):
        pytest.skip("needs systemd-journald")
    s3 = boto3.client("s3", endpoint_url=identitystore_endpoint.url, region_name=REGION)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    key = identitystore_endpoint.signing_key("alias/runas-agent-snapshot-signing")
    kms = boto3.client("kms", endpoint_url=identitystore_endpoint.url, region_name=REGION)
    public = PublicKey.load(base64.b64encode(kms.get_public_key(KeyId=key)["PublicKey"]).decode())
    yield identitystore_endpoint, isolated_host, public
    for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
    s3.delete_bucket(Bucket=BUCKET)


def publish(host, endpoint, config, out):
    """`runas-agent publish --once` inside the host, with its journald: (process, records)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "agent") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(AWS_ENDPOINT_URL_S3=endpoint.url, AWS_ENDPOINT_URL_KMS=endpoint.url)
    proc = host.run(["sh", "-c", _WITH_JOURNALD, "sh", str(out), sys.executable, "-m", "runas_agent",
                     "--config", str(config), "publish", "--once"], check=False, env=env)
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    return proc, [r for r in records if r.get("MESSAGE_ID") == PUBLISH]


def test_publish_once_records_each_publish_and_an_instance_follows(setup, tmp_path):
    endpoint, host, public = setup
    endpoint.seed(make_directory(5, users_per_group=5))
    publisher = host.write_config({
        "source": {"type": "identitystore", "region": REGION, "identity_store_id": STORE, "endpoint_url": endpoint.url},
        "run_as": {"expression": "${path:userName}"},
        "publisher": {"url": URL, "signing_key": "alias/runas-agent-snapshot-signing"},
        "state_dir": str(host.root / "publisher-state")}, "publisher.yaml")

    proc, records = publish(host, endpoint, publisher, tmp_path / "first.json")
    assert proc.returncode == Exit.OK, proc.stdout + proc.stderr
    assert f"{URL} published (first): 5 users, 1 groups, signed (public key {public.fingerprint})" in proc.stdout
    (record,) = records
    assert {k: record[k] for k in ("PUBLISH_RESULT", "PUBLISH_REASON", "PUBLISH_USERS", "PUBLISH_GROUPS", "PRIORITY")} == {
        "PUBLISH_RESULT": "published", "PUBLISH_REASON": "first", "PUBLISH_USERS": "5", "PUBLISH_GROUPS": "1",
        "PRIORITY": "6"}
    assert record["PUBLISH_IDENTITYSTORE_CALLS"] == "3" and record["PUBLISH_DIGEST"].startswith("sha256:")

    proc, records = publish(host, endpoint, publisher, tmp_path / "second.json")
    assert proc.returncode == Exit.OK and " unchanged (" in proc.stdout, proc.stdout + proc.stderr
    assert [r["PUBLISH_RESULT"] for r in records] == ["unchanged"]

    endpoint.seed(make_directory(6, users_per_group=5))
    proc, records = publish(host, endpoint, publisher, tmp_path / "third.json")
    assert [r["PUBLISH_REASON"] for r in records] == ["changed"], proc.stderr

    instance = host.write_config({
        "source": {"type": "s3", "url": URL, "bucket_region": REGION, "bucket_owner": OWNER,
                   "endpoint_url": endpoint.url, "signing_public_key": public.pem(), "identity_store_id": STORE},
        "run_as": {"expression": "${path:userName}"}}, "instance.yaml")
    sync = host.agent("--config", str(instance), "--once")
    assert sync.returncode == Exit.OK, sync.stdout + sync.stderr
    assert host.id("user00005").returncode == 0
    assert sorted(n for n in host.passwd() if n.startswith("user0")) == [f"user{i:05d}" for i in range(6)]
