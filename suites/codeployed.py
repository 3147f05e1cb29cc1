"""A suite's cells in one deployment (meshproof/codeploy.py): planned at collection, deployed and probed, all
at once, when the first of them runs, then each cell's test reports its own probe, capture and verdict.

The oracle predicts each co-deployed cell from the whole deployed object set (Plan.cell_scenario), never from
the cell alone. Cells the plan leaves alone (root-namespace objects, ...) run as before, one deployment each,
and so does every cell under `--isolate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from meshproof.codeploy import plan_rounds
from meshproof.scenario import scenario_from_dict
from suites.expectations import expect


class CoDeployed:
    """A suite's cells in as few deployments (rounds) as hold them, `max_pods` pods at most each (the matrix:
    one round of 20). A round is deployed when the first of its cells runs, every cell of it probed at once,
    and taken down before the next round comes up; each cell then reads its own result."""

    def __init__(self, mesh, options, cells: dict[str, dict], max_pods: int = 20):
        self.mesh, self.options = mesh, options
        version = options.istio_version or mesh.istio_minor()
        scenarios = []
        for cell_id, data in cells.items():
            scenario = scenario_from_dict(data, source=f"cell {cell_id}")
            scenarios.append((cell_id, replace(scenario, istio_version=version) if version else scenario))
        self.plans, self.alone = plan_rounds(scenarios, max_pods)
        self.round_of = {c.cell_id: index for index, p in enumerate(self.plans) for c in p.cells}
        self.handle, self.deployed = None, None  # the round up now, and its index
        self.in_run: dict[int, tuple] = {}  # round -> (its plan in run namespaces, run id): what predictions read
        self.results: dict = {}
        self.failed: dict[int, BaseException] = {}
        self.reported: set[str] = set()

    @property
    def plan(self):
        return self.plans[0] if self.plans else None

    def holds(self, cell_id: str) -> bool:
        return cell_id in self.round_of

    def result(self, cell_id: str):
        """This cell's probe; the first call of a round deploys it and probes every cell of it."""
        index = self.round_of[cell_id]
        if index in self.failed:
            raise RuntimeError(f"the co-deployment failed before this cell could be probed: {self.failed[index]}")
        if cell_id not in self.results:
            self.close()
            try:
                self.handle, self.deployed = self.mesh.deploy_plan(self.plans[index]), index
                self.in_run[index] = (self.mesh.plan_in_run(self.handle),
                                      self.mesh.run_namespaces(self.handle).run_id)
                self.results.update(self.mesh.probe_cells(self.handle, [c.cell_id for c in self.plans[index].cells],
                                                          capture=self.options.capture))
            except BaseException as err:
                self.failed[index] = err
                raise
        return self.results[cell_id]

    def predict(self, cell_id: str):
        """(the cell's namespace mapping, the whole deployment as the cell's scenario, the oracle's prediction)."""
        deployed, run_id = self.in_run[self.round_of[cell_id]]
        names = deployed.cell(cell_id).names(run_id, deployed.root_namespace)
        scenario = deployed.cell_scenario(cell_id)
        return names, scenario, expect(scenario)

    def own_manifests(self, scenario) -> list[dict]:
        """The deployed objects a cell's own would be: in its two namespaces, and rules only for its server."""
        spaces = (scenario.client.namespace, scenario.server.namespace)
        return [m for m in scenario.manifests if m["metadata"]["namespace"] in spaces
                and m["spec"].get("host", scenario.server.host) == scenario.server.host]

    def diagnostics(self, cell_id: str):
        """The mesh's diagnostics bundle for a cell while its round is up (None once it is gone)."""
        if self.deployed == self.round_of[cell_id] and hasattr(self.mesh, "cell_handle"):
            return self.mesh.diagnostics(self.mesh.cell_handle(self.handle, cell_id))
        return None

    def reported_on(self, cell_id: str) -> None:
        """A cell's test is done with its result: once every cell is, the pods go (the suites after the matrix
        do not share the machine with 20 idle pods)."""
        self.reported.add(cell_id)
        if self.deployed is not None and self.reported >= {c.cell_id for c in self.plans[self.deployed].cells}:
            self.close()

    def close(self) -> None:
        if self.handle is not None:
            self.mesh.teardown(self.handle)
            self.handle, self.deployed = None, None


@contextmanager
def co_deployed(mesh, options, cells: Iterable, max_pods: int = 20, on_local: bool = True) -> Iterator[CoDeployed | None]:
    """A suite's session fixture: its cells (suites.cells.Cell) co-deployed, or None (a deployment per cell)
    under --isolate, on the reference mesh unless `on_local`, and where the mesh cannot stand a co-deployment
    for its per-cell deployments."""
    if options.isolate or (mesh.name == "local" and not on_local) or not mesh.can_co_deploy():
        yield None
        return
    deployment = CoDeployed(mesh, options, {c.id: c.scenario() for c in cells}, max_pods)
    try:
        yield deployment
    finally:
        deployment.close()
