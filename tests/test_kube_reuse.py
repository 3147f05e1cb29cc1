"""Pod pair reuse on kube, decided without a cluster: which cells share a pair (shape key), what a cell
creates (its objects, labelled with the cell) and deletes (only its pair's cell objects), and which idle
pairs go. The per-cell objects are validated against the pinned schemas."""

from __future__ import annotations

import copy

import pytest

from cluster.kube.backend import (
    MAX_IDLE_PAIRS,
    KubeBackend,
    Pair,
    cell_objects,
    idle_pairs_to_evict,
    reusable_pair,
)
from cluster.kube.render import (
    CELL_LABEL,
    RUN_LABEL,
    Images,
    Revisions,
    cell_labels,
    cells_selector,
    leftover_selector,
    namespace_docs,
    policy_docs,
    shape_key,
    workload_docs,
)
from cluster.schemas.validate import errors
from meshproof.istio_api import ManifestError
from meshproof.scenario import scenario_from_dict
from suites.matrix import matrix_scenarios, scope_scenarios
from tests.kube_scenarios import MESH_WIDE, PA_STRICT, RUN, dr_istio_mutual, scenario

PAIR = RUN
DR_MUTUAL = dr_istio_mutual()
PA_DISABLE = copy.deepcopy(PA_STRICT) | {"spec": {"mtls": {"mode": "DISABLE"}}}


def cell_docs(scn, cell_id, allow_mesh_wide=False):
    return policy_docs(scn, PAIR, allow_mesh_wide, cell_labels("sess1", "kab12c", PAIR, cell_id))


def listed(docs):
    """Objects as the API server lists them: the same metadata the backend created them with."""
    return [copy.deepcopy(d) for d in docs]


# --- shape key ------------------------------------------------------------------------------------------

def test_cells_that_differ_only_in_istio_objects_share_a_shape():
    base = shape_key(scenario(), Revisions())
    assert shape_key(scenario([PA_STRICT, DR_MUTUAL]), Revisions()) == base
    assert shape_key(scenario([PA_DISABLE]), Revisions()) == base


@pytest.mark.parametrize("change", [
    lambda: (scenario(client={"namespace": "sleep", "sidecar": False}), Revisions()),
    lambda: (scenario(server={"namespace": "httpbin", "sidecar": False}), Revisions()),
    lambda: (scenario(server={"namespace": "httpbin", "sidecar": True, "service_port": 9000}), Revisions()),
    lambda: (scenario(server={"namespace": "httpbin", "sidecar": True, "target_port": 9080}), Revisions()),
    lambda: (scenario(server={"namespace": "other", "sidecar": True}), Revisions()),
    lambda: (scenario(client={"namespace": "sleep", "sidecar": True, "service_account": "robot"}), Revisions()),
    lambda: (scenario(server={"namespace": "httpbin", "sidecar": True, "labels": {"app": "httpbin", "v": "2"}}),
             Revisions()),
    lambda: (scenario(), Revisions.both("1-30-3")),
    lambda: (scenario(), Revisions("1-29-6", "1-30-3")),
    # A manifest in a third namespace needs a run namespace the default pair does not have.
    lambda: (scenario([copy.deepcopy(DR_MUTUAL) | {"metadata": {"name": "x", "namespace": "third"}}]),
             Revisions()),
])
def test_anything_the_pods_or_namespaces_depend_on_changes_the_shape(change):
    assert shape_key(*change()) != shape_key(scenario(), Revisions())


def test_a_mesh_wide_manifest_does_not_change_the_shape():
    assert shape_key(scenario([MESH_WIDE]), Revisions()) == shape_key(scenario(), Revisions())


# --- a cell's objects -------------------------------------------------------------------------------

def test_a_cells_objects_are_in_the_pairs_namespaces_with_its_cell_label_and_valid():
    first = cell_docs(scenario([PA_STRICT, DR_MUTUAL]), "kab12c1")
    second = cell_docs(scenario([PA_DISABLE]), "kab12c2")
    assert [d["metadata"]["namespace"] for d in first] == [f"httpbin-{PAIR}", f"sleep-{PAIR}"]
    assert second[0]["metadata"]["namespace"] == f"httpbin-{PAIR}"  # the same pods, so the same namespaces
    assert {d["metadata"]["labels"][CELL_LABEL] for d in first} == {"kab12c1"}
    assert second[0]["metadata"]["labels"][CELL_LABEL] == "kab12c2"
    for doc in first + second:
        assert doc["metadata"]["labels"][RUN_LABEL] == PAIR
        assert doc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "meshproof"  # crash cleanup finds it
        assert errors(doc) == [], doc
    broken = copy.deepcopy(second[0])
    broken["spec"]["mtls"]["mode"] = "STRICTLY"  # the same check on a cell object goes red
    assert errors(broken)


def test_a_root_namespace_selector_on_a_reused_pair_selects_the_pairs_pods():
    selected = copy.deepcopy(MESH_WIDE)
    selected["spec"]["selector"] = {"matchLabels": {"app": "httpbin"}}
    [doc] = cell_docs(scenario([selected]), "kab12c7", allow_mesh_wide=True)
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in workload_docs(scenario(), PAIR, Images(), Revisions())
            if d["kind"] == "Deployment"]
    # The pods were created by the pair's first cell: they carry its run id, not this cell's id.
    assert doc["spec"]["selector"]["matchLabels"] == {"app": "httpbin", RUN_LABEL: PAIR}
    assert [p for p in pods if doc["spec"]["selector"]["matchLabels"].items() <= p.items()] == pods[1:]


def test_cell_id_is_checked():
    with pytest.raises(ValueError, match="cell id 'Bad_Id': allowed: 1-20 lowercase"):
        cell_labels("s", "o", PAIR, "Bad_Id")


def test_the_pairs_own_objects_carry_no_cell_label():
    scn = scenario()
    docs = (namespace_docs(scn, PAIR, "s", "o", Revisions()) + workload_docs(scn, PAIR, Images(), Revisions()))
    assert [d["kind"] for d in docs if CELL_LABEL in d["metadata"].get("labels", {})] == []
    assert "EnvoyFilter" in [d["kind"] for d in docs]  # it stays with the pods across cells


def test_every_suite_cell_renders_valid_cell_objects():
    for cell_id, raw in list(matrix_scenarios()) + list(scope_scenarios()):
        for doc in cell_docs(scenario_from_dict(copy.deepcopy(raw), cell_id), "kab12c9", allow_mesh_wide=True):
            assert errors(doc) == [], f"{cell_id}: {doc['kind']} {doc['metadata']['name']}: {errors(doc)}"


# --- what a cell deletes ------------------------------------------------------------------------------

def test_the_previous_cells_objects_are_deleted_root_namespace_included():
    previous = cell_docs(scenario([PA_STRICT, DR_MUTUAL, MESH_WIDE]), "kab12c1", allow_mesh_wide=True)
    assert cell_objects(listed(previous), PAIR) == [
        ("DestinationRule", f"sleep-{PAIR}", "httpbin"),
        ("PeerAuthentication", f"httpbin-{PAIR}", "default"),
        ("PeerAuthentication", "istio-system", "default")]


def test_nothing_but_this_pairs_cell_objects_is_ever_deleted():
    scn = scenario([PA_STRICT])
    other_pair = policy_docs(scn, "kab12c5", False, cell_labels("sess1", "kab12c", "kab12c5", "kab12c5"))
    envoy_filter = [d for d in workload_docs(scn, PAIR, Images(), Revisions()) if d["kind"] == "EnvoyFilter"]
    foreign = copy.deepcopy(MESH_WIDE)  # someone else's policy, whatever a listing returned
    unlabelled_cell = copy.deepcopy(cell_docs(scn, "kab12c1")[0])
    del unlabelled_cell["metadata"]["labels"][CELL_LABEL]
    assert cell_objects(listed(other_pair + envoy_filter + [foreign, unlabelled_cell]), PAIR) == []
    assert cells_selector(PAIR) == f"{RUN_LABEL}={PAIR},{CELL_LABEL}"


def test_crash_cleanup_still_selects_cell_objects():
    [doc] = cell_docs(scenario([PA_STRICT]), "kab12c1")
    key, value = leftover_selector().split("=")
    assert doc["metadata"]["labels"][key] == value


# --- which pair, which evictions --------------------------------------------------------------------

def pair(key, last_used, in_use=False):
    return Pair(key, f"r{last_used}", {}, in_use=in_use, last_used=last_used)


def test_reuse_takes_an_idle_pair_of_the_same_shape_only():
    busy, idle_old, idle_new, other = pair("a", 5, in_use=True), pair("a", 1), pair("a", 3), pair("b", 9)
    assert reusable_pair([busy, idle_old, idle_new, other], "a") is idle_new
    assert reusable_pair([busy, other], "a") is None


def test_eviction_takes_the_least_recently_used_idle_pairs_and_never_one_in_use():
    pairs = [pair("a", 4), pair("b", 1, in_use=True), pair("c", 2), pair("d", 3), pair("e", 0, in_use=True)]
    assert [p.key for p in idle_pairs_to_evict(pairs, keep=1)] == ["c", "d"]
    assert idle_pairs_to_evict(pairs, keep=3) == []
    assert [p.key for p in idle_pairs_to_evict(pairs, keep=0)] == ["c", "d", "a"]


def simulate(cells, keep_idle):
    """Serial run of the suites' cells through the backend's own choice functions: pairs created."""
    pairs, created = [], 0
    for clock, (cell_id, raw) in enumerate(cells):
        key = shape_key(scenario_from_dict(copy.deepcopy(raw), cell_id), Revisions())
        chosen = reusable_pair(pairs, key)
        if chosen is None:
            for gone in idle_pairs_to_evict(pairs, keep=keep_idle - 1):
                pairs.remove(gone)
            chosen = pair(key, clock)
            pairs.append(chosen)
            created += 1
        chosen.last_used = clock  # deploy, probe, teardown
        assert len([p for p in pairs if not p.in_use]) <= keep_idle
    return created, len({p.key for p in pairs})


def test_the_suites_cells_reuse_a_handful_of_pairs():
    cells = list(matrix_scenarios()) + list(scope_scenarios())
    shapes = {shape_key(scenario_from_dict(copy.deepcopy(raw), c), Revisions()) for c, raw in cells}
    created, _ = simulate(cells, MAX_IDLE_PAIRS)
    # Every shape needs one pair; eviction may cost a few more, never one per cell.
    assert len(shapes) <= created <= 2 * len(shapes) < len(cells) // 4
    assert simulate(cells, keep_idle=1)[0] >= created  # fewer idle pairs never reuse more


# --- refusals come before any API call, on a reused pair too ---------------------------------------

MESH_WIDE_CELL = {"client": {"namespace": "sleep"}, "server": {"namespace": "httpbin"}, "resources": [MESH_WIDE]}


def backend_with_idle_pair(raw, **options):
    backend = KubeBackend("/nonexistent", **options)
    idle = Pair(shape_key(scenario_from_dict(copy.deepcopy(raw), "x"), backend.revisions), "kab12c1",
                {"sleep": "sleep-kab12c1", "httpbin": "httpbin-kab12c1"}, ("sleep-kab12c1", "sleep-0"),
                ("httpbin-kab12c1", "httpbin-0", "10.0.0.9"))
    backend.pairs.append(idle)
    return backend, idle


def test_a_refused_cell_leaves_an_idle_pair_as_it_was():
    backend, idle = backend_with_idle_pair(MESH_WIDE_CELL)
    assert reusable_pair(backend.pairs, idle.key) is idle  # the cell would reuse it...
    with pytest.raises(ManifestError, match="root namespace.*--allow-mesh-wide"):
        backend.deploy(scenario_from_dict(copy.deepcopy(MESH_WIDE_CELL), "mesh-wide.yaml"))
    assert backend._handles == {} and backend.pairs == [idle] and not idle.in_use and idle.cells == 0



def test_an_allowed_cell_on_an_idle_pair_still_needs_a_started_backend():
    backend, idle = backend_with_idle_pair(MESH_WIDE_CELL, allow_mesh_wide=True)
    with pytest.raises(RuntimeError, match=r"start\(\) was not called"):
        backend.deploy(scenario_from_dict(copy.deepcopy(MESH_WIDE_CELL), "mesh-wide.yaml"))
    assert backend._handles == {} and backend.pairs == [idle] and not idle.in_use
