"""A suite's cells in one deployment (meshproof/codeploy.py): planned at collection, deployed and probed, all
at once, when the first of them runs, then each cell's test reports its own probe, capture and verdict.

The oracle predicts each co-deployed cell from the whole deployed object set (Plan.cell_scenario), never from
the cell alone. Cells the plan leaves alone (root-namespace objects, ...) run as before, one deployment each,
and so does every cell under `--isolate`.
"""

from __future__ import annotations

from dataclasses import replace

from meshproof.codeploy import plan
from meshproof.scenario import scenario_from_dict
from suites.expectations import expect


class CoDeployed:
    def __init__(self, mesh, options, cells: dict[str, dict]):
        self.mesh, self.options = mesh, options
        version = options.istio_version or mesh.istio_minor()
        scenarios = []
        for cell_id, data in cells.items():
            scenario = scenario_from_dict(data, source=f"cell {cell_id}")
            scenarios.append((cell_id, replace(scenario, istio_version=version) if version else scenario))
        self.plan, self.alone = plan(scenarios)
        self.handle = None
        self.results: dict | None = None
        self.failed: BaseException | None = None
        self.reported: set[str] = set()

    def holds(self, cell_id: str) -> bool:
        return self.plan is not None and cell_id not in self.alone

    def result(self, cell_id: str):
        """This cell's probe; the first call deploys the plan and probes every cell of it."""
        if self.failed is not None:
            raise RuntimeError(f"the co-deployment failed before this cell could be probed: {self.failed}")
        if self.results is None:
            try:
                self.handle = self.mesh.deploy_plan(self.plan)
                self.results = self.mesh.probe_cells(self.handle, [c.cell_id for c in self.plan.cells],
                                                     capture=self.options.capture)
            except BaseException as err:
                self.failed = err
                raise
        return self.results[cell_id]

    def predict(self, cell_id: str):
        """(the cell's namespace mapping, the whole deployment as the cell's scenario, the oracle's prediction)."""
        deployed = self.mesh.plan_in_run(self.handle)
        names = deployed.cell(cell_id).names(self.mesh.run_namespaces(self.handle).run_id, deployed.root_namespace)
        scenario = deployed.cell_scenario(cell_id)
        return names, scenario, expect(scenario)

    def own_manifests(self, scenario) -> list[dict]:
        """The deployed objects a cell's own would be: in its two namespaces, and rules only for its server."""
        spaces = (scenario.client.namespace, scenario.server.namespace)
        return [m for m in scenario.manifests if m["metadata"]["namespace"] in spaces
                and m["spec"].get("host", scenario.server.host) == scenario.server.host]

    def diagnostics(self, cell_id: str):
        if hasattr(self.mesh, "diagnostics") and hasattr(self.mesh, "cell_handle"):
            return self.mesh.diagnostics(self.mesh.cell_handle(self.handle, cell_id))
        return None

    def reported_on(self, cell_id: str) -> None:
        """A cell's test is done with its result: once every cell is, the pods go (the suites after the matrix
        do not share the machine with 20 idle pods)."""
        self.reported.add(cell_id)
        if self.plan is not None and self.reported >= {c.cell_id for c in self.plan.cells}:
            self.close()

    def close(self) -> None:
        if self.handle is not None:
            self.mesh.teardown(self.handle)
            self.handle = None
