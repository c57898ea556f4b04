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


def test_run_config_keeps_the_secrets_of_backends_operations_use_on_their_own():
    # The target dialog asks for the secrets of every backend an operation's own targets use: they arrive as
    # flat fields of a backend that is not the dialog's choice, and reach the jobs that run on it.
    config = {
        "storage": "local",
        "storage.s3.secretAccessKey": "s3cr3t-a",
        "storage.s3.accessKeyId": "id-a",
        "storage.s3.endpoint": "http://s3.example",  # public: only ever taken from the node's own choice
        "storage.nowhere.token": "ignored",  # a backend that is not installed
        "compute": "local",
        "compute.gme.apiToken": "",
    }
    rc = run_config(config)
    assert rc.secrets["storage"] == {"s3": {"secretAccessKey": "s3cr3t-a", "accessKeyId": "id-a"}}
    assert rc.secrets["compute"] == {}


def test_executions_fill_a_grid_in_creation_order():
    from deepforge_plugins.pipeline import GRID_COLUMNS, grid_position, next_grid_slot

    assert next_grid_slot([]) == 0
    slots = [grid_position(i) for i in range(GRID_COLUMNS + 2)]
    assert len({(p["x"], p["y"]) for p in slots}) == len(slots)
    assert slots[1]["y"] == slots[0]["y"] < slots[GRID_COLUMNS]["y"]  # a row, then the next one
    assert slots[GRID_COLUMNS]["x"] == slots[0]["x"]
    # After the last one taken, even when older ones were deleted; moved or missing positions are ignored.
    assert next_grid_slot([grid_position(3), None, {"x": 7, "y": 9}, {"x": "a"}]) == 4
