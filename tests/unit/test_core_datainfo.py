"""DataInfo: DeepForge's exact JSON shapes round-trip; malformed input raises DataInfoError naming the problem."""

from __future__ import annotations

import json

import pytest
from deepforge_adapters.errors import DataInfoError
from deepforge_adapters.storage import DataInfo

# DeepForge's dataInfo shapes, verbatim (docs/protocols.md, "Metamodel and dataInfo")
GME = '{"backend":"gme","data":"e93b7917c1fc457e4041cf7d5f0568ef8d91040c"}'
S3 = json.dumps(
    {
        "backend": "s3",
        "data": {
            "AcceptRanges": "bytes",
            "LastModified": "2021-03-04T05:06:07.000Z",
            "ContentLength": 1234,
            "ETag": '"0cc175b9c0f1b6a831c399e269772661"',
            "ContentType": "application/octet-stream",
            "Metadata": {},
            "filename": "guest+proj/executions/_K_a_b/model",
            "size": 1234,
            "bucketName": "deepforge",
            "endpoint": "https://s3.amazonaws.com",
        },
    },
    separators=(",", ":"),
)
SCISERVER = json.dumps(
    {
        "backend": "sciserver-files",
        "data": {
            "name": "model",
            "size": 1234,
            "lastModified": "2021-03-04T05:06:07",
            "volume": "user/deepforge_data",
            "volumePool": "Storage",
            "filename": "guest+proj/executions/_K_a_b/model",
        },
    },
    separators=(",", ":"),
)


@pytest.mark.parametrize("text", [GME, S3, SCISERVER])
def test_deepforge_shapes_round_trip_exactly(text: str) -> None:
    info = DataInfo.from_json(text)
    assert info.dumps() == text  # same keys, same order, same compact separators
    assert info.to_json() == json.loads(text)
    assert DataInfo.from_json(info.to_json()) == info
    assert DataInfo.from_json(text.encode()) == info


def test_gme_data_is_the_bare_hash() -> None:
    info = DataInfo.from_json(GME)
    assert info.backend == "gme"
    assert info.data == "e93b7917c1fc457e4041cf7d5f0568ef8d91040c"


def test_from_json_passes_a_datainfo_through() -> None:
    info = DataInfo("local", {"filename": "x"})
    assert DataInfo.from_json(info) is info


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
        ('"e93b7917c1fc457e4041cf7d5f0568ef8d91040c"', "must be a JSON object, got str"),
        ('{"data": "x"}', "missing 'backend'"),
        ('{"backend": "gme"}', "missing 'data'"),
        ("{}", "missing 'backend' and 'data'"),
        ('{"backend": "gme", "data": "x", "hash": "y"}', "unexpected keys ['hash']"),
        ('{"backend": "", "data": "x"}', "'backend' must be a non-empty string"),
        ('{"backend": 3, "data": "x"}', "'backend' must be a non-empty string"),
        ('{"backend": "s3", "data": null}', "'data' is null for backend 's3'"),
    ],
)
def test_malformed_datainfo_errors_say_what_is_wrong(value: str, fragment: str) -> None:
    with pytest.raises(DataInfoError) as info:
        DataInfo.from_json(value)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)
