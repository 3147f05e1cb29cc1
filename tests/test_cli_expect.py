"""`meshproof expect` as a user runs it: the installed console script in a subprocess.

Exit 0 with one JSON object (or the matrix as a JSON list); bad input exits 2 with one line on stderr that
names the file, the resource, the field and what is allowed, and nothing on stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MESHPROOF = Path(sys.executable).with_name("meshproof")
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

# The outcome each example's header comment promises (derived in tests/test_expectations.py's sources).
EXAMPLE_OUTCOMES = {
    "strict-namespace": "mtls",
    "naked-client-strict": "reset",
    "dr-disable-vs-strict": "503",
    "port-level-exception": "plaintext",
    "root-selector-ignored": "plaintext",
    "mutual-mesh-certs": "503",
}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(MESHPROOF), "expect", *args], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          check=False)


def write(tmp_path: Path, data, name: str = "scenario.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_examples_are_all_listed():
    assert {p.stem for p in EXAMPLES} == set(EXAMPLE_OUTCOMES)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_prints_one_json_prediction(example):
    done = run(str(example))
    assert done.returncode == 0, done.stderr
    prediction = json.loads(done.stdout)
    assert prediction["outcome"] == EXAMPLE_OUTCOMES[example.stem]
    assert {"outcome", "reason", "rule", "source", "wire", "peer_identity", "client_tls",
            "server_mode"} <= set(prediction)
    assert f'outcome "{prediction["outcome"]}"' in example.read_text()  # the file's header says so too


def test_istio_version_override(tmp_path):
    done = run(str(EXAMPLES[0]), "--istio-version", "1.28")
    assert done.returncode == 0 and json.loads(done.stdout)["istio_version"] == "1.28"


def test_matrix():
    done = run("--matrix")
    assert done.returncode == 0, done.stderr
    cells = json.loads(done.stdout)
    assert len(cells) == 100
    assert {"cell", "scenario", "outcome", "reason", "rule"} <= set(cells[0])
    assert {c["outcome"] for c in cells} == {"mtls", "plaintext", "503", "reset"}


GOOD = {"client": {"namespace": "sleep"}, "server": {"namespace": "httpbin"},
        "resources": [{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                       "metadata": {"name": "default", "namespace": "httpbin"}, "spec": {"mtls": {"mode": "STRICT"}}}]}


def bad(path: list, value) -> dict:
    data = json.loads(json.dumps(GOOD))
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


# (id, file content, words the one-line error must contain besides the file name)
BAD_INPUT = [
    ("unknown-kind", bad(["resources", 0, "kind"], "PeerAuth"),
     ["resources[0] PeerAuth httpbin/default", ": kind: ", "allowed: PeerAuthentication, DestinationRule"]),
    ("unknown-mode", bad(["resources", 0, "spec", "mtls", "mode"], "ON"),
     ["PeerAuthentication httpbin/default", "spec.mtls.mode", "allowed: UNSET, DISABLE, PERMISSIVE, STRICT"]),
    ("port-level-without-selector", bad(["resources", 0, "spec"], {"portLevelMtls": {8080: {"mode": "DISABLE"}}}),
     ["spec.portLevelMtls", "requires a workload selector"]),
    ("mutual-without-certs", bad(["resources", 0], {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "httpbin", "namespace": "sleep"},
        "spec": {"host": "httpbin.httpbin.svc.cluster.local", "trafficPolicy": {"tls": {"mode": "MUTUAL"}}}}),
     ["DestinationRule sleep/httpbin", "spec.trafficPolicy.tls.clientCertificate", "required for mode MUTUAL"]),
    ("unknown-scenario-field", bad(["clients"], {}), ["scenario", "clients", "allowed: name, client, server"]),
    ("bad-sidecar-value", bad(["client", "sidecar"], "yes"), ["client.sidecar", "allowed: true, false"]),
    ("bad-version", bad(["istio_version"], "1.27"), ["istio_version", "allowed: 1.28, 1.29, 1.30"]),
    ("bad-client-namespace", bad(["client", "namespace"], "Bad NS!"), ["client.namespace", "DNS-1123 label"]),
    ("server-namespace-number", bad(["server", "namespace"], 5), ["server.namespace", "5 is not a namespace"]),
    ("bad-root-namespace", bad(["root_namespace"], "Istio_System"), ["root_namespace", "DNS-1123 label"]),
    ("bad-service-account", bad(["client", "service_account"], "Sleep SA"),
     ["client.service_account", "DNS-1123 subdomain"]),
    ("bad-label-key", bad(["server", "labels"], {"bad key": "x"}), ["server.labels", "not a valid label key"]),
    ("bad-label-value", bad(["server", "labels"], {"app": "http bin"}),
     ["server.labels.app", "not a valid label value"]),
    ("label-value-number", bad(["client", "labels"], {"version": 1}), ["client.labels.version", "label value"]),
    ("labels-not-mapping", bad(["client", "labels"], ["app=sleep"]), ["client.labels", "mapping of label key"]),
    ("unquoted-version", bad(["istio_version"], 1.3), ["istio_version", "'1.3' is not supported", "quoted"]),
    ("yaml-error", "client: {namespace: sleep\nserver: [\n", ["not valid YAML", "line "]),
    ("not-a-mapping", "- just\n- a list\n", ["scenario", "must be a mapping"]),
]


@pytest.mark.parametrize("content,words", [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_exits_2_with_one_clear_line(tmp_path, content, words):
    path = write(tmp_path, content)
    done = run(str(path))
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"meshproof expect: error: {path}: ")
    for word in words:
        assert word in lines[0]


def test_valid_names_and_labels_are_accepted(tmp_path):
    # The good side of the refusals above: dashes, a dotted service account, prefixed keys, an empty value.
    data = bad(["client"], {"namespace": "sleep-2", "service_account": "sleep.v2",
                            "labels": {"app.kubernetes.io/name": "sleep", "version": ""}})
    data["root_namespace"] = "mesh-root"
    done = run(str(write(tmp_path, data)))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["server_mode"] == "STRICT"


def test_missing_file(tmp_path):
    done = run(str(tmp_path / "nope.yaml"))
    assert done.returncode == 2 and "nope.yaml" in done.stderr and "file not found" in done.stderr


def test_bad_version_override():
    done = run(str(EXAMPLES[0]), "--istio-version", "2.0")
    assert done.returncode == 2 and "allowed: 1.28, 1.29, 1.30" in done.stderr
    assert "--istio-version: '2.0' is not supported" in done.stderr
    done = run("--matrix", "--istio-version", "2.0")
    assert done.returncode == 2 and "--istio-version" in done.stderr


def test_no_arguments():
    done = run()
    assert done.returncode == 2 and "give a scenario file or --matrix" in done.stderr


def test_version_check_lives_in_one_place():
    # Every entry point calls meshproof.scenario.check_istio_version; none keeps its own copy of the rule.
    for module in ("meshproof/cli.py", "suites/expectations.py", "suites/matrix.py"):
        text = (ROOT / module).read_text()
        assert "SUPPORTED_ISTIO_VERSIONS" not in text and "check_istio_version(" in text, module
