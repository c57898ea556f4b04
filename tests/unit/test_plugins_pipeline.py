import pytest
from deepforge_plugins.pipeline import Graph, PipelineJob, _code_order, unique_name
from deepforge_plugins.run_config import run_config
from deepforge_plugins.targets import Choice

CODE = """
class Train:
    def execute(self, data, labels, epochs):
        model = fit(data, labels)
        if epochs:
            return model, history
        return model, history
"""


def test_ports_follow_the_order_of_the_code():
    assert _code_order(CODE, ["labels", "epochs", "data"], inputs=True) == ["data", "labels", "epochs"]
    assert _code_order(CODE, ["history", "model"], inputs=False) == ["model", "history"]
    # A port the code doesn't name goes last; unparsable code falls back to names.
    assert _code_order(CODE, ["extra", "data"], inputs=True) == ["data", "extra"]
    assert _code_order("def (:", ["b", "a"], inputs=True) == ["a", "b"]


def test_execution_names_are_unique_and_identifier_safe():
    assert unique_name(set(), "my run!") == "my_run_"
    assert unique_name({"demo_execution", "demo_execution_2"}, "demo_execution") == "demo_execution_3"


def test_graph_maps_connections_to_job_edges():
    jobs = {p: PipelineJob(p, p.strip("/"), p + "/op", "Operation", "pending", "") for p in ("/e/a", "/e/b", "/e/c")}
    connections = [("/e/a/op/O/x", "/e/b/op/I/x"), ("/e/a/op/O/x", "/e/c/op/I/x"), ("/e/b/op/O/y", "/e/c/op/I/y")]
    graph = Graph(jobs, connections)
    assert graph.edges() == [("/e/a", "/e/b"), ("/e/a", "/e/c"), ("/e/b", "/e/c")]
    assert graph.consumers("/e/a/op/O/x") == ["/e/b/op/I/x", "/e/c/op/I/x"]
    with pytest.raises(KeyError, match="/e/zz/p"):
        graph.job_of_port("/e/zz/p")


def test_run_config_places_pipeline_input_credentials_by_the_artifacts_backend():
    config = {
        "storage": "local",
        "compute": "local",
        "inputs": {"/G/3": {"secretAccessKey": "k3y5"}, "/G/4": {"backend": "vault", "token": "t0k3n"}},
    }
    rc = run_config(config, backend_of={"/G/3": "s3"}.get)
    assert rc.targets.storage == Choice("local") and rc.targets.compute == Choice("local")
    assert rc.secrets["storage"]["s3"] == {"secretAccessKey": "k3y5"}
    assert rc.secrets["storage"]["vault"] == {"token": "t0k3n"}
