"""The contract server itself: each documented quirk of sciserver-api.md, over real HTTP.

These pin the fake to the contract so the adapter tests cannot pass against a friendlier server than
SciServer is.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from tests.fixtures.sciserver import SciServerHandle
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.integration

TIMEOUT = 10


def h(token: str) -> dict[str, str]:
    return {"X-Auth-Token": token}


def login_body(name: str, password: str) -> dict[str, Any]:
    return {"auth": {"identity": {"password": {"user": {"name": name, "password": password}}}}}


def wait_status(sciserver: SciServerHandle, token: str, job_id: int, done: set[int], limit: float = 30) -> dict:
    def reached() -> dict | None:
        job = requests.get(f"{sciserver.racm_url}/jobm/rest/jobs/{job_id}", headers=h(token), timeout=TIMEOUT).json()
        return job if job["status"] in done else None

    return wait_for(reached, limit, f"job {job_id} to reach {done}")


# ------------------------------------------------------------------------------------------ login
def test_login_returns_200_with_subject_token_header_and_token_body(sciserver: SciServerHandle) -> None:
    r = requests.post(
        sciserver.login_url + "?TaskName=DeepForge.Authentication.Login",
        json=login_body(sciserver.username, sciserver.password),
        timeout=TIMEOUT,
    )
    assert r.status_code == 200
    assert r.headers["X-Subject-Token"] == r.text and len(r.text) > 40


def test_wrong_password_is_500_with_json_error_body(sciserver: SciServerHandle) -> None:
    r = requests.post(sciserver.login_url, json=login_body(sciserver.username, "wrong"), timeout=TIMEOUT)
    assert r.status_code == 500
    assert "X-Subject-Token" not in r.headers
    error = r.json()["error"]
    assert error["message"] == "HTTP/1.1 401 Unauthorized"
    assert isinstance(error["time"], int) and "stackTrace" in error


def test_malformed_login_body_message(sciserver: SciServerHandle) -> None:
    r = requests.post(sciserver.login_url, json={"username": sciserver.username}, timeout=TIMEOUT)
    assert r.status_code == 500
    assert "could not be parsed" in r.json()["error"]["message"]


def test_too_many_failed_logins_lock_the_account(sciserver: SciServerHandle) -> None:
    sciserver.settings(max_login_attempts=2)
    for _ in range(2):
        requests.post(sciserver.login_url, json=login_body(sciserver.username, "bad"), timeout=TIMEOUT)
    r = requests.post(sciserver.login_url, json=login_body(sciserver.username, sciserver.password), timeout=TIMEOUT)
    assert r.status_code == 500
    assert r.json()["error"]["message"].startswith("Maximum number of login attempts reached")


def test_token_validation_endpoints(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    doc = requests.get(f"{sciserver.login_url}/{token}?TaskName=x", timeout=TIMEOUT).json()
    assert doc["token"]["user"]["name"] == sciserver.username
    assert requests.head(f"{sciserver.login_url}/{token}", timeout=TIMEOUT).status_code == 200
    v2 = requests.get(f"{sciserver.url}login-portal/api/validate/{token}", timeout=TIMEOUT)
    assert v2.json()["username"] == sciserver.username
    bad = requests.get(f"{sciserver.login_url}/not-a-token", timeout=TIMEOUT)
    assert bad.status_code == 500 and bad.json()["error"]["message"] == "HTTP/1.1 401 Unauthorized"
    bad2 = requests.get(f"{sciserver.url}login-portal/api/validate/not-a-token", timeout=TIMEOUT)
    assert bad2.status_code == 401 and bad2.content == b""


def test_expired_token_gives_401_on_files_and_racm_and_500_on_v1_validation(sciserver: SciServerHandle) -> None:
    sciserver.settings(token_lifetime=0.5)
    token = sciserver.login()
    assert requests.get(sciserver.files_url + "volumes", headers=h(token), timeout=TIMEOUT).status_code == 200
    time.sleep(0.7)
    files = requests.get(sciserver.files_url + "volumes", headers=h(token), timeout=TIMEOUT)
    assert files.status_code == 401 and files.json()["error"] == "Unauthorized" and "status" in files.json()
    racm = requests.get(sciserver.racm_url + "/jobm/rest/jobs", headers=h(token), timeout=TIMEOUT)
    assert racm.status_code == 401 and racm.headers["WWW-Authenticate"] == "X-Auth-Token"
    assert racm.json() == {"status": "error", "error": "Not authenticated. Add valid token as X-Auth-Token header"}
    assert requests.get(f"{sciserver.login_url}/{token}", timeout=TIMEOUT).status_code == 500


def test_missing_token_is_401_and_cookie_works_on_fileservice(sciserver: SciServerHandle) -> None:
    assert requests.get(sciserver.files_url + "volumes", timeout=TIMEOUT).status_code == 401
    token = sciserver.login()
    r = requests.get(sciserver.files_url + "volumes", cookies={"portalCookie": token}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert requests.get(sciserver.files_url + "ping", timeout=TIMEOUT).text == "Service is alive"


# ------------------------------------------------------------------------------------------ files
def test_upload_exists_error_unless_quiet_then_overwrite(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    url = f"{sciserver.files_url}file/Storage/{sciserver.username}/persistent/dir/a.txt"
    r1 = requests.put(url + "?TaskName=t", data=b"one", headers=h(token), timeout=TIMEOUT)
    assert r1.status_code == 200 and r1.content == b"" and r1.headers["Etag"].startswith("W/")
    r2 = requests.put(url, data=b"two", headers=h(token), timeout=TIMEOUT)
    assert r2.status_code == 500
    assert r2.json() == {
        "status": "error",
        "error": f"Error when creating 'Storage/{sciserver.username}/persistent/dir/a.txt'.  File already exists.",
    }
    r3 = requests.put(url + "?quiet=True", data=b"three", headers=h(token), timeout=TIMEOUT)
    assert r3.status_code == 200
    got = requests.get(url, headers=h(token), timeout=TIMEOUT)
    assert got.content == b"three" and got.headers["Content-Length"] == "5"
    assert got.headers["Content-disposition"] == 'attachment; filename="a.txt"'


def test_download_of_missing_file_is_200_with_empty_body_and_no_length(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    url = f"{sciserver.files_url}file/Storage/{sciserver.username}/persistent/nope.bin"
    r = requests.get(url, headers=h(token), timeout=TIMEOUT)
    assert r.status_code == 200 and r.content == b""
    assert "Content-Length" not in r.headers
    sciserver.settings(missing_download="error")
    r = requests.get(url, headers=h(token), timeout=TIMEOUT)
    assert r.status_code == 500 and "does not exist" in r.json()["error"]


def test_empty_file_download_has_content_length_zero(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    url = f"{sciserver.files_url}file/Storage/{sciserver.username}/persistent/empty"
    requests.put(url, data=b"", headers=h(token), timeout=TIMEOUT).raise_for_status()
    r = requests.get(url, headers=h(token), timeout=TIMEOUT)
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Length"] == "0"


def test_chunked_streaming_upload(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    url = f"{sciserver.files_url}file/Storage/{sciserver.username}/persistent/chunked.bin"
    r = requests.put(url, data=iter([b"a" * 1000, b"b" * 1000]), headers=h(token), timeout=TIMEOUT)
    assert r.status_code == 200
    assert requests.get(url, headers=h(token), timeout=TIMEOUT).content == b"a" * 1000 + b"b" * 1000


def test_jsontree_level2_shape_and_errors(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    base = f"Storage/{sciserver.username}/persistent"
    requests.put(f"{sciserver.files_url}file/{base}/dir/a.txt", data=b"x" * 30, headers=h(token), timeout=TIMEOUT)
    requests.put(f"{sciserver.files_url}folder/{base}/dir/sub", headers=h(token), timeout=TIMEOUT)
    tree = requests.get(
        f"{sciserver.files_url}jsontree/{base}/dir?level=2&options=&TaskName=t", headers=h(token), timeout=TIMEOUT
    ).json()
    assert tree["queryPath"] == f"{base}/dir"
    root = tree["root"]
    assert root["name"] == "dir" and set(root) == {"name", "lastModified", "creationTime", "folders", "files"}
    assert [f["name"] for f in root["folders"]] == ["sub"]
    (entry,) = root["files"]
    assert entry["name"] == "a.txt" and entry["size"] == 30
    assert entry["lastModified"].endswith("Z") and entry["lastModified"][10] == "T"
    sub = requests.get(
        f"{sciserver.files_url}jsontree/{base}/dir/sub?level=2", headers=h(token), timeout=TIMEOUT
    ).json()["root"]
    assert sub["files"] == [] and sub["folders"] == []
    one = requests.get(f"{sciserver.files_url}jsontree/{base}/dir?level=1", headers=h(token), timeout=TIMEOUT).json()
    assert set(one["root"]) == {"name", "lastModified", "creationTime"}
    tree3 = requests.get(f"{sciserver.files_url}jsontree/{base}?level=3", headers=h(token), timeout=TIMEOUT).json()
    assert tree3["root"]["name"] == "persistent" and tree3["queryPath"] == f"{base}/"
    (d,) = tree3["root"]["folders"]
    assert "files" in d and "folders" not in d["folders"][0]  # empty keys omitted in tree mode
    missing = requests.get(f"{sciserver.files_url}jsontree/{base}/nope?level=2", headers=h(token), timeout=TIMEOUT)
    assert missing.status_code == 500
    assert missing.json()["error"] == f"Error when listing contents of '{base}/nope'. Path does not exist."
    bad = requests.get(f"{sciserver.files_url}jsontree/{base}?level=0", headers=h(token), timeout=TIMEOUT)
    assert bad.json()["error"] == "Parameter 'level' must be an integer greater than 0."
    globbed = requests.get(
        f"{sciserver.files_url}jsontree/{base}/dir?level=2&options=**.txt", headers=h(token), timeout=TIMEOUT
    ).json()["root"]
    assert [f["name"] for f in globbed["files"]] == ["a.txt"] and globbed["folders"] == []


def test_legacy_jsontree_omits_empty_files(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    sciserver.settings(legacy_jsontree=True)
    root = requests.get(
        f"{sciserver.files_url}jsontree/Storage/{sciserver.username}/persistent?level=2",
        headers=h(token),
        timeout=TIMEOUT,
    ).json()["root"]
    assert "files" not in root


def test_folder_create_delete_and_volume_root_noop(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    base = f"{sciserver.files_url}%s/Storage/{sciserver.username}/persistent"
    assert requests.put(base % "folder" + "/x/y", headers=h(token), timeout=TIMEOUT).status_code == 200
    again = requests.put(base % "folder" + "/x/y", headers=h(token), timeout=TIMEOUT)
    assert again.status_code == 500 and "Directory already exists." in again.json()["error"]
    assert requests.put(base % "folder" + "/x/y?quiet=true", headers=h(token), timeout=TIMEOUT).status_code == 200
    assert requests.delete(base % "data" + "/x", headers=h(token), timeout=TIMEOUT).status_code == 200
    gone = requests.delete(base % "data" + "/x", headers=h(token), timeout=TIMEOUT)
    assert gone.status_code == 500
    assert (
        gone.json()["error"] == f"Error when deleting 'Storage/{sciserver.username}/persistent/x'. It does not exist."
    )
    assert requests.delete(base % "data" + "/x?quiet=True", headers=h(token), timeout=TIMEOUT).status_code == 200
    assert requests.delete(base % "data", headers=h(token), timeout=TIMEOUT).status_code == 200
    assert sciserver.volume_path().is_dir()


def test_move_and_copy(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    base = f"{sciserver.files_url}%s/Storage/{sciserver.username}/persistent"
    requests.put(base % "file" + "/a.txt", data=b"A", headers=h(token), timeout=TIMEOUT).raise_for_status()
    dest = {
        "destinationPath": "d/b.txt",
        "destinationRootVolume": "Storage",
        "destinationUserVolume": "persistent",
        "destinationOwnerName": sciserver.username,
        "destinationFileService": "FileServiceJHU",
    }
    copy = requests.put(
        base % "data" + "/a.txt?doCopy=True&replaceExisting=False", json=dest, headers=h(token), timeout=TIMEOUT
    )
    assert copy.status_code == 200
    again = requests.put(base % "data" + "/a.txt?doCopy=True", json=dest, headers=h(token), timeout=TIMEOUT)
    assert again.status_code == 500 and again.json()["error"] == "Destination file already exists"
    move = requests.put(base % "data" + "/a.txt?replaceExisting=true", json=dest, headers=h(token), timeout=TIMEOUT)
    assert move.status_code == 200  # server default doCopy=false: a move
    assert requests.get(base % "file" + "/d/b.txt", headers=h(token), timeout=TIMEOUT).content == b"A"
    assert requests.get(base % "file" + "/a.txt", headers=h(token), timeout=TIMEOUT).content == b""
    other = requests.put(
        base % "data" + "/d/b.txt", json=dict(dest, destinationFileService="Other"), headers=h(token), timeout=TIMEOUT
    )
    assert "another FileService" in other.json()["error"]


def test_volumes_permissions_and_path_errors(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    model = requests.get(sciserver.files_url + "volumes/", headers=h(token), timeout=TIMEOUT).json()
    roots = {r["name"]: r for r in model["rootVolumes"]}
    assert {v["name"] for v in roots["Storage"]["userVolumes"]} == {"persistent"}
    assert model["dataVolumes"][0]["name"] == "SDSS_DAS"
    put = requests.put(
        f"{sciserver.files_url}volume/Storage/{sciserver.username}/deepforge_data", headers=h(token), timeout=TIMEOUT
    )
    assert put.status_code == 200
    dup = requests.put(
        f"{sciserver.files_url}volume/Storage/{sciserver.username}/deepforge_data", headers=h(token), timeout=TIMEOUT
    )
    assert dup.status_code == 500 and "already exists" in dup.json()["error"]
    listing = requests.get(
        f"{sciserver.files_url}jsontree/Storage/{sciserver.username}/deepforge_data?level=2",
        headers=h(token),
        timeout=TIMEOUT,
    ).json()
    assert listing["root"]["name"] != "deepforge_data"  # on-disk UUID for user-created volumes
    ro = requests.put(f"{sciserver.files_url}file/SDSS_DAS/x.txt", data=b"x", headers=h(token), timeout=TIMEOUT)
    assert ro.status_code == 500 and ro.json()["error"] == "Missing required permissions on volume"
    nov = requests.get(
        f"{sciserver.files_url}file/Storage/{sciserver.username}/nope/x", headers=h(token), timeout=TIMEOUT
    )
    assert nov.status_code == 500 and nov.json()["error"] == "Volume does not exist"
    other = sciserver.add_user()
    theirs = requests.get(
        f"{sciserver.files_url}jsontree/Storage/{other.username}/persistent?level=2", headers=h(token), timeout=TIMEOUT
    )
    assert theirs.status_code == 500 and theirs.json()["error"] == "Volume does not exist"
    short = requests.get(f"{sciserver.files_url}file/Storage/{sciserver.username}", headers=h(token), timeout=TIMEOUT)
    assert short.json()["error"] == "Path variable 'userVolume' was not provided"
    dots = requests.get(
        f"{sciserver.files_url}file/Storage/{sciserver.username}/persistent/a/%2E%2E/%2E%2E/x",
        headers=h(token),
        timeout=TIMEOUT,
    )
    assert dots.status_code == 500 and "outside of the requested volume" in dots.json()["error"]


def test_paths_with_spaces_and_unicode(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    url = f"{sciserver.files_url}file/Storage/{sciserver.username}/persistent/my%20dir/%C3%A9t%C3%A9.txt"
    requests.put(url, data=b"ete", headers=h(token), timeout=TIMEOUT).raise_for_status()
    assert (sciserver.volume_path() / "my dir" / "été.txt").read_bytes() == b"ete"


# ------------------------------------------------------------------------------------------ JOBM
def domain(sciserver: SciServerHandle, token: str, name: str = "Small Jobs Domain") -> dict[str, Any]:
    domains = requests.get(
        f"{sciserver.racm_url}/jobm/rest/computedomains?batch=true", headers=h(token), timeout=TIMEOUT
    ).json()
    return next(d for d in domains if d["name"] == name)


def submit(sciserver: SciServerHandle, token: str, command: str, **extra: Any) -> requests.Response:
    d = domain(sciserver, token)
    body = {
        "command": command,
        "submitterDID": "contract-test",
        "dockerComputeEndpoint": d["apiEndpoint"],
        "dockerImageName": "DeepForge",
        "volumeContainers": [],
        "resultsFolderURI": "",
        "userVolumes": [
            {"userVolumeId": v["id"], "needsWriteAccess": "write" in v["allowedActions"]} for v in d["userVolumes"]
        ],
    }
    body.update(extra)
    return requests.post(f"{sciserver.racm_url}//jobm/rest/jobs/docker", json=body, headers=h(token), timeout=TIMEOUT)


def test_compute_domains(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    domains = requests.get(
        f"{sciserver.racm_url}/jobm/rest/computedomains?batch=true&interactive=false", headers=h(token), timeout=TIMEOUT
    ).json()
    names = {d["name"]: d for d in domains}
    assert set(names) == {"Small Jobs Domain", "Large Jobs Domain"}
    assert names["Large Jobs Domain"]["images"] == []
    uvols = {(v["rootVolumeName"], v["name"]) for v in names["Small Jobs Domain"]["userVolumes"]}
    assert uvols == {("Storage", "persistent"), ("Temporary", "scratch")}
    interactive = requests.get(
        f"{sciserver.racm_url}/jobm/rest/computedomains", headers=h(token), timeout=TIMEOUT
    ).json()
    assert [d["name"] for d in interactive] == ["Interactive Docker Compute Domain"]


def test_job_runs_with_bit_flag_statuses_epoch_ms_and_results_folder(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    (sciserver.volume_path("Temporary", "scratch") / "in.txt").write_text("hello from scratch\n")
    sciserver.settings(pending_seconds=0.5)
    r = submit(
        sciserver,
        token,
        f"cat /home/idies/workspace/Temporary/{sciserver.username}/scratch/in.txt; "
        "echo oops >&2; cat /home/idies/jobs.path; test -s /home/idies/keystone.token && echo token-ok",
    )
    assert r.status_code == 200
    job = r.json()
    assert job["status"] == 1 and isinstance(job["submissionTime"], int) and job["submissionTime"] > 1e12
    assert "resultsFolderURI" not in job and "startTime" not in job and "endTime" not in job  # NON_NULL
    done = wait_status(sciserver, token, job["id"], {32, 64, 128})
    assert done["status"] == 32, done
    assert done["startTime"] >= done["submissionTime"] and done["endTime"] >= done["startTime"]
    folder = done["resultsFolderURI"]
    assert folder.startswith(f"/home/idies/workspace/Temporary/{sciserver.username}/jobs/") and folder.endswith("/")
    rel = folder[len("/home/idies/workspace/") :]
    stdout = requests.get(f"{sciserver.files_url}file/{rel}stdout.txt", headers=h(token), timeout=TIMEOUT).text
    assert stdout == f"hello from scratch\n{folder}\ntoken-ok\n"
    stderr = requests.get(f"{sciserver.files_url}file/{rel}stderr.txt", headers=h(token), timeout=TIMEOUT).text
    assert stderr == "oops\n"
    light = requests.get(f"{sciserver.racm_url}/jobm/rest/dockerjobs", headers=h(token), timeout=TIMEOUT).json()
    (item,) = light
    assert item["dockerComputeEndpoint"] == "Small Jobs Domain" and "userVolumes" not in item
    assert "username" not in item and item["messages"] == []


def test_results_folder_absent_until_started(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    sciserver.settings(pending_seconds=2.0)
    job = submit(sciserver, token, "sleep 1").json()
    seen = requests.get(f"{sciserver.racm_url}/jobm/rest/jobs/{job['id']}", headers=h(token), timeout=TIMEOUT).json()
    assert seen["status"] == 1 and "resultsFolderURI" not in seen
    started = wait_status(sciserver, token, job["id"], {8})
    assert started["resultsFolderURI"] and "endTime" not in started and "duration" not in started


def test_failing_command_is_error_with_message(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    job = submit(sciserver, token, "echo about to fail; exit 3").json()
    done = wait_status(sciserver, token, job["id"], {32, 64, 128})
    assert done["status"] == 64
    assert any(m["label"] == "ERROR" and "3" in m["content"] for m in done["messages"])


def test_cancel_semantics_per_state(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    sciserver.settings(pending_seconds=30)
    pending = submit(sciserver, token, "true").json()
    c = requests.post(f"{sciserver.racm_url}/jobm/rest/jobs/{pending['id']}/cancel", headers=h(token), timeout=TIMEOUT)
    assert c.status_code == 200 and c.json()["status"] == 128  # PENDING -> CANCELED at once
    sciserver.settings(pending_seconds=0.0)
    running = submit(sciserver, token, "sleep 30").json()
    wait_status(sciserver, token, running["id"], {8})
    c = requests.post(f"{sciserver.racm_url}/jobm/rest/jobs/{running['id']}/cancel", headers=h(token), timeout=TIMEOUT)
    assert c.status_code == 200 and c.json()["status"] == 8
    assert [m["label"] for m in c.json()["messages"]] == ["CANCEL"]
    c2 = requests.post(f"{sciserver.racm_url}/jobm/rest/jobs/{running['id']}/cancel", headers=h(token), timeout=TIMEOUT)
    assert [m["label"] for m in c2.json()["messages"]] == ["CANCEL"]  # idempotent
    assert wait_status(sciserver, token, running["id"], {32, 64, 128})["status"] == 128
    finished = submit(sciserver, token, "true").json()
    wait_status(sciserver, token, finished["id"], {32})
    c3 = requests.post(
        f"{sciserver.racm_url}/jobm/rest/jobs/{finished['id']}/cancel", headers=h(token), timeout=TIMEOUT
    )
    assert c3.status_code == 200 and c3.json()["status"] == 32
    unknown = requests.post(f"{sciserver.racm_url}/jobm/rest/jobs/999999999/cancel", headers=h(token), timeout=TIMEOUT)
    assert unknown.status_code == 500 and unknown.json() == {"status": "error", "error": "Error canceling job"}


def test_job_errors(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    unknown = requests.get(f"{sciserver.racm_url}/jobm/rest/jobs/999999999", headers=h(token), timeout=TIMEOUT)
    assert unknown.status_code == 500 and unknown.json() == {"status": "error", "error": "Unknown error"}
    assert (
        requests.get(f"{sciserver.racm_url}/jobm/rest/jobs/abc", headers=h(token), timeout=TIMEOUT).status_code == 400
    )
    bad_image = submit(sciserver, token, "true", dockerImageName="Nope")
    assert bad_image.status_code == 500
    assert bad_image.json()["error"] == (
        f"Error in job submission for user {sciserver.username}\n\tError creating DockerJob\n"
        "No valid Docker image on submitted job model"
    )
    bad_domain = submit(sciserver, token, "true", dockerComputeEndpoint="http://elsewhere/")
    assert "must reference a dockercomputedomain" in bad_domain.json()["error"]
    unknown_field = submit(sciserver, token, "true", surprise=1)
    assert unknown_field.status_code == 500 and 'Unrecognized field "surprise"' in unknown_field.json()["error"]
    null_write = submit(sciserver, token, "true", userVolumes=[{"userVolumeId": 1}])
    assert "NullPointerException" in null_write.json()["error"]
    other = sciserver.add_user()
    their = submit(other, other.login(), "true").json()
    stolen = requests.get(f"{sciserver.racm_url}/jobm/rest/jobs/{their['id']}", headers=h(token), timeout=TIMEOUT)
    assert stolen.status_code == 500


def test_job_list_filters(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    sciserver.settings(pending_seconds=30)
    first = submit(sciserver, token, "true", submitterDID="alpha").json()
    second = submit(sciserver, token, "true", submitterDID="beta").json()
    jobs = requests.get(f"{sciserver.racm_url}/jobm/rest/jobs?TaskName=x", headers=h(token), timeout=TIMEOUT).json()
    assert [j["id"] for j in jobs] == [second["id"], first["id"]]  # newest first
    assert "userVolumes" in jobs[0] and jobs[0]["dockerComputeEndpoint"].startswith("http")
    beta = requests.get(
        f"{sciserver.racm_url}/jobm/rest/dockerjobs?labelReg=bet", headers=h(token), timeout=TIMEOUT
    ).json()
    assert [j["id"] for j in beta] == [second["id"]]
    top = requests.get(f"{sciserver.racm_url}/jobm/rest/jobs?top=1", headers=h(token), timeout=TIMEOUT).json()
    assert len(top) == 1
    requests.post(f"{sciserver.racm_url}/jobm/rest/jobs/{first['id']}/cancel", headers=h(token), timeout=TIMEOUT)
    open_jobs = requests.get(
        f"{sciserver.racm_url}/jobm/rest/jobs?open=false", headers=h(token), timeout=TIMEOUT
    ).json()
    assert [j["id"] for j in open_jobs] == [second["id"]]  # presence of `open` filters, whatever its value
    requests.post(f"{sciserver.racm_url}/jobm/rest/jobs/{second['id']}/cancel", headers=h(token), timeout=TIMEOUT)


def test_fileservice_discovery(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    (service,) = requests.get(f"{sciserver.racm_url}/storem/fileservices", headers=h(token), timeout=TIMEOUT).json()
    assert service["name"] == "FileServiceJHU" and service["apiEndpoint"] == sciserver.url + "fileservice/"


def test_shared_read_only_volume(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    other = sciserver.add_user()
    base = f"Storage/{sciserver.username}/persistent"
    requests.put(f"{sciserver.files_url}file/{base}/s.txt", data=b"shared", headers=h(token), timeout=TIMEOUT)
    share = [{"name": other.username, "type": "USER", "allowedActions": ["read"]}]
    r = requests.patch(f"{sciserver.files_url}share/{base}", json=share, headers=h(token), timeout=TIMEOUT)
    assert r.status_code == 200
    theirs = other.login()
    assert requests.get(f"{sciserver.files_url}file/{base}/s.txt", headers=h(theirs), timeout=TIMEOUT).text == "shared"
    denied = requests.put(f"{sciserver.files_url}file/{base}/t.txt", data=b"x", headers=h(theirs), timeout=TIMEOUT)
    assert denied.status_code == 500 and denied.json()["error"] == "Missing required permissions on volume"
