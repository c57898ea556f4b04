"""JOBM routes (sciserver-api.md section 4), mounted at ``/racm``, and the job manager that runs jobs.

The real service runs a docker job's ``command`` with a shell inside a container where each mounted user
volume appears at ``/home/idies/workspace/<root>/<owner>/<uvol>`` and the working directory is the job's
``resultsFolderURI``.  Here the "container" is a per-job directory ``<root>/containers/<id>/home/idies``:
``workspace/<root>/<owner>/<uvol>`` in it are symlinks to the mounted volumes' directories (only the volumes
the job asked for, plus the ``jobs`` volume holding its results folder), ``keystone.token`` holds a fresh
token of the submitter and ``jobs.path`` the working directory.  The command runs with ``bash -c`` after the
literal prefix ``/home/idies`` is replaced by that directory, with ``HOME`` pointing there,
``SCISERVER_KEYSTONE_TOKEN_PATH`` naming the token file, and the server's own Python environment first on
``PATH`` (it plays the docker image).  stdout and stderr go to ``stdout.txt``/``stderr.txt`` in the results
folder, as on SciServer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request

from .errors import ServiceError, racm_unauthenticated, service_error, spring_error
from .state import FILE_SERVICE_ID, FILE_SERVICE_NAME, State, UserVolume

bp = Blueprint("racm", __name__)

PENDING, QUEUED, ACCEPTED, STARTED, FINISHED, SUCCESS, ERROR, CANCELED = (1, 2, 4, 8, 16, 32, 64, 128)
CONTAINER_HOME = "/home/idies"
WORKSPACE = CONTAINER_HOME + "/workspace/"
JOB_TYPE = "jobm.model.COMPMDockerJobModel"
SUBMIT_FIELDS = frozenset(
    {
        "command",
        "scriptURI",
        "submitterDID",
        "dockerComputeEndpoint",
        "dockerImageName",
        "volumeContainers",
        "userVolumes",
        "resultsFolderURI",
        "fullDockerCommand",
    }
)
IMAGES = ("DeepForge", "SciServer Essentials 4.0", "Python + R")


def state() -> State:
    return current_app.config["STATE"]


def manager() -> JobManager:
    return current_app.config["JOBS"]


def now_ms() -> int:
    return int(time.time() * 1000)


@bp.before_request
def authenticate() -> Any:
    token = request.headers.get("X-Auth-Token")
    user = state().user_for_token(token)
    state().log_request(request.method, request.path, request.query_string.decode(), user.name if user else None)
    if user is None:
        return racm_unauthenticated()
    g.user = user.name
    return None


@bp.errorhandler(ServiceError)
def on_service_error(exc: ServiceError) -> Any:
    return service_error(exc)


# ------------------------------------------------------------------------------------------ domains
def domains_for(username: str) -> list[dict[str, Any]]:
    st = state()
    base = st.base_url
    user_volumes = []
    for v in st.visible_volumes(username):
        actions = [a for a in st.allowed_actions(v, username) if a in ("read", "write")]
        user_volumes.append(
            {
                "id": v.id,
                "computeDomainId": 1,
                "name": v.name,
                "description": v.description,
                "fullPath": f"/srv/{v.root}/{st.users[v.owner].keystone_id}/{v.dir_name}/",
                "owner": v.owner,
                "ownerId": st.users[v.owner].keystone_id,
                "resourceUUID": v.resource_uuid,
                "fileServiceAPIEndpoint": base + "fileservice/",
                "rootVolumeName": v.root,
                "isShareable": True,
                "allowedActions": actions,
            }
        )
    data_volumes = [
        {
            "id": d["id"],
            "publisherDID": str(d["id"]),
            "racmUUID": d["resourceUUID"],
            "name": d["name"],
            "description": d["description"],
            "writable": False,
        }
        for d in st.data_volumes.values()
    ]
    images = [
        {
            "id": 20443 + i,
            "publisherDID": str(230 + i),
            "racmUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            "name": name,
            "description": f"{name} image",
        }
        for i, name in enumerate(IMAGES)
    ]
    return [
        {
            "id": 1,
            "publisherDID": "1",
            "racmUUID": "51b9ccc7-bc68-4b09-82c5-157a125b4f29",
            "apiEndpoint": base + "compute/api/domains/1/",
            "name": "Small Jobs Domain",
            "description": "Batch jobs up to 2 days",
            "volumes": data_volumes,
            "images": images,
            "userVolumes": user_volumes,
            "batch": True,
        },
        # DeepForge issue #1849: a domain can be listed with no images the user may use.
        {
            "id": 10001,
            "publisherDID": "6",
            "racmUUID": "7a0b3c2d-0000-4000-8000-000000000006",
            "apiEndpoint": base + "compute/api/domains/6/",
            "name": "Large Jobs Domain",
            "description": "Large batch jobs",
            "volumes": [],
            "images": [],
            "userVolumes": [],
            "batch": True,
        },
        {
            "id": 3,
            "publisherDID": "3",
            "racmUUID": "7a0b3c2d-0000-4000-8000-000000000003",
            "apiEndpoint": base + "compute/api/domains/3/",
            "name": "Interactive Docker Compute Domain",
            "description": "Interactive containers",
            "volumes": data_volumes,
            "images": images,
            "userVolumes": user_volumes,
            "batch": False,
        },
    ]


@bp.get("/jobm/rest/computedomains")
def computedomains() -> Any:
    batch = request.args.get("batch", "").lower() == "true"
    interactive = request.args.get("interactive", "").lower() == "true"
    selected = [
        {k: v for k, v in d.items() if k != "batch"}
        for d in domains_for(g.user)
        if (d["batch"] and batch) or (not d["batch"] and (interactive or not batch))
    ]
    return jsonify(selected)


@bp.get("/storem/fileservices")
def fileservices() -> Any:
    return jsonify(
        [
            {
                "identifier": FILE_SERVICE_ID,
                "name": FILE_SERVICE_NAME,
                "description": "A service for reaching the file system at JHU",
                "apiEndpoint": state().base_url + "fileservice/",
            }
        ]
    )


# ------------------------------------------------------------------------------------------ jobs
class Job:
    """One docker job: the JOBM model (null fields omitted when rendered) plus the run's private state."""

    def __init__(
        self, job_id: int, username: str, body: dict[str, Any], domain: dict[str, Any], mounts: list[dict[str, Any]]
    ) -> None:
        self.id = job_id
        self.username = username
        self.body = body
        self.domain = domain
        self.mounts = mounts  # [{"volume": UserVolume, "needsWriteAccess": bool, "model": {...}}]
        self.status = PENDING
        self.submission_time = now_ms()
        self.start_time: int | None = None
        self.end_time: int | None = None
        self.timeout: int | None = None
        self.executor_did: str | None = None
        self.results_folder: str | None = body.get("resultsFolderURI") or None
        self.messages: list[dict[str, Any]] = []
        self.cancel_requested = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None

    def add_message(self, label: str, content: str) -> None:
        self.messages.append({"id": 990 + len(self.messages) + self.id, "content": content, "label": label})

    def detailed(self) -> dict[str, Any]:
        model = {
            "id": self.id,
            "submitterDID": self.body.get("submitterDID"),
            "executorDID": self.executor_did,
            "submitterTrustId": None,
            "runByUUID": None,
            "submissionTime": self.submission_time,
            "startTime": self.start_time,
            "endTime": self.end_time,
            "duration": None
            if self.end_time is None or self.start_time is None
            else (self.end_time - self.start_time) / 1000.0,
            "timeout": self.timeout,
            "messages": list(self.messages),
            "status": self.status,
            "resultsFolderURI": self.results_folder,
            "type": JOB_TYPE,
            "userVolumes": [m["model"] for m in self.mounts],
            "username": self.username,
            "command": self.body.get("command"),
            "scriptURI": self.body.get("scriptURI"),
            "dockerComputeEndpoint": self.domain["apiEndpoint"],
            "dockerComputeResourceContextUUID": self.domain["racmUUID"],
            "fullDockerCommand": self.body.get("fullDockerCommand") or [],
            "dockerImageName": self.body.get("dockerImageName"),
            "volumeContainers": self.body.get("volumeContainers") or [],
        }
        return {k: v for k, v in model.items() if v is not None}  # Include.NON_NULL

    def light(self) -> dict[str, Any]:
        """The ``/dockerjobs`` item: domain NAME in ``dockerComputeEndpoint``; no userVolumes/username."""
        model = {
            "id": self.id,
            "submitterDID": self.body.get("submitterDID"),
            "status": self.status,
            "submissionTime": self.submission_time,
            "startTime": self.start_time,
            "endTime": self.end_time,
            "resultsFolderURI": self.results_folder,
            "command": self.body.get("command"),
            "dockerImageName": self.body.get("dockerImageName"),
            "dockerComputeEndpoint": self.domain["name"],
            "dockerComputeResourceContextUUID": self.domain["racmUUID"],
            "messages": [],
            "volumeContainers": [],
            "type": JOB_TYPE,
        }
        return {k: v for k, v in model.items() if v is not None}


class JobManager:
    """Holds the jobs and runs each in its own thread: PENDING -> QUEUED -> ACCEPTED -> STARTED -> ..."""

    def __init__(self, st: State) -> None:
        self.state = st
        self.jobs: dict[int, Job] = {}
        self.lock = threading.RLock()
        self._next_id = 123456
        self._stopping = threading.Event()

    def submit(self, username: str, body: dict[str, Any], domain: dict[str, Any], mounts: list[dict[str, Any]]) -> Job:
        with self.lock:
            job = Job(self._next_id, username, body, domain, mounts)
            self._next_id += 1
            self.jobs[job.id] = job
        threading.Thread(target=self._lifecycle, args=(job,), name=f"job-{job.id}", daemon=True).start()
        return job

    def get(self, job_id: int, username: str) -> Job | None:
        with self.lock:
            job = self.jobs.get(job_id)
            return job if job is not None and job.username == username else None

    def cancel(self, job: Job) -> None:
        with self.lock:
            if job.status == PENDING:
                job.status = CANCELED
                job.end_time = now_ms()
                job.cancel_requested.set()
            elif job.status < FINISHED and not job.cancel_requested.is_set():
                job.add_message("CANCEL", "Cancel requested by user")
                job.cancel_requested.set()

    def stop(self) -> None:
        """Server shutdown: kill every running job's process group."""
        self._stopping.set()
        with self.lock:
            for job in self.jobs.values():
                if job.process is not None and job.process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(job.process.pid, signal.SIGKILL)

    # ---------------------------------------------------------------------------------- lifecycle
    def _wait(self, job: Job, seconds: float) -> bool:
        """Sleep ``seconds``; True if a cancel arrived meanwhile."""
        return job.cancel_requested.wait(max(0.0, seconds))

    def _finish(self, job: Job, status: int) -> None:
        with self.lock:
            if job.status >= SUCCESS:
                return
            if job.end_time is None:
                job.end_time = now_ms()
            job.status = status

    def _lifecycle(self, job: Job) -> None:
        settings = self.state.settings
        try:
            if self._wait(job, settings.pending_seconds):
                self._finish(job, CANCELED)  # (already CANCELED when cancelled while PENDING)
                return
            for status in (QUEUED, ACCEPTED):
                with self.lock:
                    job.status = status
                    if status == ACCEPTED:
                        job.executor_did = uuid.uuid4().hex
                        job.timeout = settings.job_timeout
                if self._wait(job, settings.step_seconds):
                    self._finish(job, CANCELED)
                    return
            self._run(job)
        except Exception as exc:  # the job manager never dies silently: the job shows ERROR
            with self.lock:
                job.add_message("ERROR", f"Job manager error: {exc}")
            self._finish(job, ERROR)

    def _run(self, job: Job) -> None:
        st = self.state
        home = st.root / "containers" / str(job.id) / CONTAINER_HOME.lstrip("/")
        workspace = home / "workspace"
        workspace.mkdir(parents=True, exist_ok=True)
        mounted = [m["volume"] for m in job.mounts]
        results_rel = self._results_folder(job, mounted)
        for volume in mounted:
            link = workspace / volume.root / volume.owner / volume.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(st.volume_dir(volume), target_is_directory=True)
        for container in job.body.get("volumeContainers") or []:
            data = st.data_volumes.get(container.get("name", ""))
            if data is not None and not (workspace / data["name"]).exists():
                (workspace / data["name"]).symlink_to(data["path"], target_is_directory=True)
        cwd = workspace / results_rel
        cwd.mkdir(parents=True, exist_ok=True)
        token = st.issue_token(job.username)
        (home / "keystone.token").write_text(token.value + "\n")
        (home / "jobs.path").write_text(f"{WORKSPACE}{results_rel}/\n")
        command = str(job.body.get("command") or "")
        (cwd / "command.txt").write_text(command + "\n")
        local_command = command.replace(CONTAINER_HOME, str(home))
        env = dict(os.environ)
        env.update(
            HOME=str(home),
            PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
            SCISERVER_KEYSTONE_TOKEN_PATH=str(home / "keystone.token"),
        )
        with self.lock:
            if job.cancel_requested.is_set():
                self._finish(job, CANCELED)
                return
            job.status = STARTED
            job.start_time = now_ms()
            job.results_folder = f"{WORKSPACE}{results_rel}/"
            with open(cwd / "stdout.txt", "wb") as out, open(cwd / "stderr.txt", "wb") as err:
                job.process = subprocess.Popen(
                    ["bash", "-c", local_command],
                    cwd=cwd,
                    stdout=out,
                    stderr=err,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
        process = job.process
        deadline = time.monotonic() + (job.timeout or st.settings.job_timeout)
        while process.poll() is None:
            if job.cancel_requested.is_set() or self._stopping.is_set():
                self._kill(process)
                self._finish(job, CANCELED)
                return
            if time.monotonic() > deadline:
                self._kill(process)
                with self.lock:
                    job.add_message("TIMEOUT", f"Job exceeded its timeout of {job.timeout} seconds")
                self._finish(job, ERROR)
                return
            time.sleep(0.02)
        with self.lock:
            job.status = FINISHED
            job.end_time = now_ms()
        time.sleep(st.settings.step_seconds)
        if process.returncode == 0:
            self._finish(job, SUCCESS)
        else:
            with self.lock:
                job.add_message("ERROR", f"Command exited with non-zero status {process.returncode}")
            self._finish(job, ERROR)

    def _results_folder(self, job: Job, mounted: list[UserVolume]) -> str:
        """``<root>/<owner>/<uvol>/<unique>`` under the client's folder or the user's ``Temporary/.../jobs``."""
        unique = f"{time.strftime('%Y%m%d%H%M%S')}-{job.id}-{uuid.uuid4().hex[:6]}"
        given = job.results_folder
        if given:
            if not given.startswith(WORKSPACE):
                raise ValueError(f"resultsFolderURI {given!r} is not under {WORKSPACE}")
            parts = [p for p in given[len(WORKSPACE) :].split("/") if p]
            writable = {
                (m["volume"].root, m["volume"].owner, m["volume"].name) for m in job.mounts if m["needsWriteAccess"]
            }
            if len(parts) < 3 or tuple(parts[:3]) not in writable:
                raise ValueError(f"resultsFolderURI {given!r} is not in a volume mounted with write access")
            return "/".join([*parts, unique])
        jobs_volume = self.state.find_volume("Temporary", job.username, "jobs") or self.state.create_volume(
            "Temporary", job.username, "jobs", default=True, description="Job working directories"
        )
        if jobs_volume not in mounted:
            mounted.append(jobs_volume)
        return f"Temporary/{job.username}/jobs/{unique}"

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@bp.post("/jobm/rest/jobs/docker")
def submit() -> Any:
    user = g.user
    prefix = f"Error in job submission for user {user}\n\t"
    try:
        body = json.loads(request.get_data(as_text=True) or "null")
    except ValueError as exc:
        raise ServiceError(prefix + f"JsonParseException: {exc}") from None
    if not isinstance(body, dict):
        raise ServiceError(prefix + "MismatchedInputException: expected a JSON object")
    unknown = sorted(set(body) - SUBMIT_FIELDS)
    if unknown:
        raise ServiceError(prefix + f'UnrecognizedPropertyException: Unrecognized field "{unknown[0]}"')
    creating = prefix + "Error creating DockerJob\n"
    domain = next(
        (d for d in domains_for(user) if d["batch"] and d["apiEndpoint"] == body.get("dockerComputeEndpoint")), None
    )
    if domain is None:
        raise ServiceError(creating + "A docker job must reference a dockercomputedomain")
    if body.get("dockerImageName") not in {i["name"] for i in domain["images"]}:
        raise ServiceError(creating + "No valid Docker image on submitted job model")
    if not body.get("command") and not body.get("scriptURI"):
        raise ServiceError(creating + "A docker job needs a command or a scriptURI")
    available = {v["id"]: v for v in domain["userVolumes"]}
    mounts: list[dict[str, Any]] = []
    for requested in body.get("userVolumes") or []:
        if requested.get("needsWriteAccess") is None:
            raise ServiceError(creating + "java.lang.NullPointerException")
        entry = available.get(requested.get("userVolumeId"))
        if entry is None or any(m["volume"].id == entry["id"] for m in mounts):
            continue  # inaccessible ids are skipped silently; duplicates mounted once
        write = bool(requested["needsWriteAccess"]) and "write" in entry["allowedActions"]
        volume = state().volumes[entry["id"]]
        mounts.append(
            {
                "volume": volume,
                "needsWriteAccess": write,
                "model": {
                    "id": 77 + len(mounts),
                    "userVolumeId": entry["id"],
                    "needsWriteAccess": write,
                    "fullPath": entry["fullPath"],
                },
            }
        )
    for container in body.get("volumeContainers") or []:
        if container.get("name") not in {v["name"] for v in domain["volumes"]}:
            raise ServiceError(creating + f"Data volume {container.get('name')!r} not available")
    job = manager().submit(user, body, domain, mounts)
    return jsonify(job.detailed())


def _job_id(raw: str) -> int | None:
    return int(raw) if raw.isdigit() else None


@bp.get("/jobm/rest/jobs/<raw_id>")
def get_job(raw_id: str) -> Any:
    job_id = _job_id(raw_id)
    if job_id is None:
        return spring_error(
            400, "Bad Request", f"Failed to convert value of type 'java.lang.String' to 'long': {raw_id}"
        )
    job = manager().get(job_id, g.user)
    if job is None:
        raise ServiceError("Unknown error")  # the model factory throws on the null job
    with manager().lock:
        return jsonify(job.detailed())


@bp.post("/jobm/rest/jobs/<raw_id>/cancel")
def cancel_job(raw_id: str) -> Any:
    job_id = _job_id(raw_id)
    job = manager().get(job_id, g.user) if job_id is not None else None
    if job is None:
        raise ServiceError("Error canceling job")
    manager().cancel(job)
    with manager().lock:
        return jsonify(job.detailed())


def _listed_jobs(docker_only: bool) -> list[Job]:
    with manager().lock:
        jobs = [j for j in manager().jobs.values() if j.username == g.user]
    jobs.sort(key=lambda j: (j.submission_time, j.id), reverse=True)
    if "open" in request.args:
        jobs = [j for j in jobs if j.status <= FINISHED]
    if docker_only and request.args.get("labelReg"):
        jobs = [j for j in jobs if request.args["labelReg"] in str(j.body.get("submitterDID") or "")]
    for bound, keep in (("start", lambda j, t: j.submission_time >= t), ("end", lambda j, t: j.submission_time <= t)):
        when = _parse_date(request.args.get(bound))
        if when is not None:
            jobs = [j for j in jobs if keep(j, when)]
    top = request.args.get("top", "-1")
    if top.lstrip("-").isdigit() and int(top) >= 0:
        jobs = jobs[: int(top)]
    return jobs


def _parse_date(raw: str | None) -> int | None:
    """``yyyy-MM-dd HH:mm:ss Z`` then ``yyyy-MM-dd``; anything unparseable is ignored silently."""
    if not raw:
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d"):
        try:
            return int(datetime.strptime(raw[:10] if fmt == "%Y-%m-%d" else raw, fmt).timestamp() * 1000)
        except ValueError:
            continue
    return None


@bp.get("/jobm/rest/jobs")
def list_jobs() -> Any:
    with manager().lock:
        return jsonify([j.detailed() for j in _listed_jobs(docker_only=False)])


@bp.get("/jobm/rest/dockerjobs")
def list_docker_jobs() -> Any:
    with manager().lock:
        return jsonify([j.light() for j in _listed_jobs(docker_only=True)])
