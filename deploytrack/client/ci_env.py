"""What a CI system tells a job about itself, read from the variables it sets.

One table row per CI: how to recognise it, and which variables give the commit SHA, branch,
repository, build URL, build number, build id and actor. The build id is unique per job
*attempt* (a re-run gets a new one); the client uses it as the default `invoke_id`, so a
re-run is a new deployment record and a retried send within one attempt is not a second one.
Where a CI's run-wide id is shared by its jobs (GitHub's run id, Jenkins' build tag, Azure's
build id), `job` names the job: `wrap` (one process, so one job) joins it to the id, so two jobs of
one run wrapping deployments of the same product and environment are two deployments; `send`
keeps the run-wide id, so a `started` sent by one job and the outcome by a later one stay one.

Sources are the vendors' documented variables (GitHub Actions "Variables reference", GitLab
"Predefined CI/CD variables", Jenkins "env-vars.html" plus the Git plugin, CircleCI
"Project values and variables", Azure Pipelines "Predefined variables" — exported upper-cased
with dots turned into underscores, Bitbucket "Variables and secrets", Buildkite "Environment
variables"), and the mapping table in the DevGrid document (seeds/002).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from urllib.parse import quote

Env = Mapping[str, str]


@dataclass(frozen=True)
class CIInfo:
    """What one CI run says about itself; every field may be missing."""

    source_system: str | None = None
    sha: str | None = None
    branch: str | None = None
    repository: str | None = None
    build_url: str | None = None
    build_number: str | None = None
    build_id: str | None = None
    actor: str | None = None
    job: str | None = None  # the job within the run, where `build_id` is the run's (shared by its jobs)

    @property
    def job_id(self) -> str | None:
        """`build_id` joined with the job: one job's own id (what `wrap` defaults `invoke_id` to)."""
        return _joined(self.build_id, self.job)

    def as_dict(self) -> dict[str, str | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _get(env: Env, *names: str) -> str | None:
    """The first of `names` that is set to something non-blank."""
    for name in names:
        value = (env.get(name) or "").strip()
        if value:
            return value
    return None


def _branch(ref: str | None) -> str | None:
    """`refs/heads/main` or `origin/main` -> `main`; tags and pull refs are not branches."""
    if not ref:
        return None
    if ref.startswith("refs/heads/"):
        return ref[len("refs/heads/"):] or None
    if ref.startswith("refs/"):
        return None
    return ref[len("origin/"):] if ref.startswith("origin/") else ref


def _joined(*parts: str | None, sep: str = "-") -> str | None:
    """Parts joined by `sep` when the first is present; missing later parts are left out."""
    if not parts[0]:
        return None
    return sep.join(p for p in parts if p)


def _github(env: Env) -> CIInfo:
    server = _get(env, "GITHUB_SERVER_URL") or "https://github.com"
    repo = _get(env, "GITHUB_REPOSITORY")
    run_id = _get(env, "GITHUB_RUN_ID")
    # On pull_request events GITHUB_REF is refs/pull/N/merge; the branch is GITHUB_HEAD_REF.
    branch = _get(env, "GITHUB_HEAD_REF") or _branch(_get(env, "GITHUB_REF"))
    if branch is None and _get(env, "GITHUB_REF_TYPE") == "branch":
        branch = _get(env, "GITHUB_REF_NAME")
    return CIInfo(
        source_system="github",
        sha=_get(env, "GITHUB_SHA"),
        branch=branch,
        repository=f"{server}/{repo}" if repo else None,
        build_url=f"{server}/{repo}/actions/runs/{run_id}" if repo and run_id else None,
        build_number=_get(env, "GITHUB_RUN_NUMBER"),
        build_id=_joined(run_id, _get(env, "GITHUB_RUN_ATTEMPT")),
        actor=_get(env, "GITHUB_TRIGGERING_ACTOR", "GITHUB_ACTOR"),
        job=_get(env, "GITHUB_JOB"),  # the job's key in the workflow (the legs of a matrix share it)
    )


def _gitlab(env: Env) -> CIInfo:
    return CIInfo(
        source_system="gitlab",
        sha=_get(env, "CI_COMMIT_SHA"),
        branch=_get(env, "CI_COMMIT_BRANCH", "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME"),
        repository=_get(env, "CI_PROJECT_URL"),
        build_url=_get(env, "CI_JOB_URL", "CI_PIPELINE_URL"),
        build_number=_get(env, "CI_PIPELINE_IID", "CI_PIPELINE_ID"),
        build_id=_get(env, "CI_JOB_ID", "CI_PIPELINE_ID"),
        actor=_get(env, "GITLAB_USER_EMAIL", "GITLAB_USER_LOGIN"),
    )


def _jenkins(env: Env) -> CIInfo:
    # GIT_* come from the Git plugin; BRANCH_NAME/CHANGE_* from multibranch pipelines;
    # BUILD_USER_ID from the Build User Vars plugin; STAGE_NAME is set inside a Pipeline `stage`.
    return CIInfo(
        source_system="jenkins",
        sha=_get(env, "GIT_COMMIT"),
        branch=_get(env, "CHANGE_BRANCH", "BRANCH_NAME") or _branch(_get(env, "GIT_BRANCH")),
        repository=_get(env, "GIT_URL"),
        build_url=_get(env, "BUILD_URL"),
        build_number=_get(env, "BUILD_NUMBER"),
        build_id=_get(env, "BUILD_TAG") or _joined(_get(env, "JOB_NAME"), _get(env, "BUILD_NUMBER")),
        actor=_get(env, "BUILD_USER_ID", "CHANGE_AUTHOR"),
        job=_get(env, "STAGE_NAME"),
    )


def _circleci(env: Env) -> CIInfo:
    return CIInfo(
        source_system="circleci",
        sha=_get(env, "CIRCLE_SHA1"),
        branch=_get(env, "CIRCLE_BRANCH"),
        repository=_get(env, "CIRCLE_REPOSITORY_URL"),
        build_url=_get(env, "CIRCLE_BUILD_URL"),
        build_number=_get(env, "CIRCLE_BUILD_NUM"),
        build_id=_get(env, "CIRCLE_WORKFLOW_JOB_ID", "CIRCLE_WORKFLOW_ID"),
        actor=_get(env, "CIRCLE_USERNAME"),
    )


def _azure(env: Env) -> CIInfo:
    collection = _get(env, "SYSTEM_COLLECTIONURI", "SYSTEM_TEAMFOUNDATIONCOLLECTIONURI")
    project = _get(env, "SYSTEM_TEAMPROJECT")
    build_id = _get(env, "BUILD_BUILDID")
    url = None
    if collection and project and build_id:
        url = f"{collection.rstrip('/')}/{quote(project)}/_build/results?buildId={quote(build_id)}"
    return CIInfo(
        source_system="azure-devops",
        sha=_get(env, "BUILD_SOURCEVERSION"),
        branch=_branch(_get(env, "SYSTEM_PULLREQUEST_SOURCEBRANCH", "BUILD_SOURCEBRANCH")),
        repository=_get(env, "BUILD_REPOSITORY_URI"),
        build_url=url,
        build_number=_get(env, "BUILD_BUILDNUMBER"),
        build_id=_joined(build_id, _get(env, "SYSTEM_JOBATTEMPT")),
        actor=_get(env, "BUILD_REQUESTEDFOREMAIL", "BUILD_REQUESTEDFOR"),
        job=_get(env, "SYSTEM_JOBID"),
    )


def _bitbucket(env: Env) -> CIInfo:
    full_name = _get(env, "BITBUCKET_REPO_FULL_NAME")
    number = _get(env, "BITBUCKET_BUILD_NUMBER")
    url = f"https://bitbucket.org/{full_name}/pipelines/results/{number}" if full_name and number else None
    return CIInfo(
        source_system="bitbucket",
        sha=_get(env, "BITBUCKET_COMMIT"),
        branch=_get(env, "BITBUCKET_BRANCH"),
        repository=_get(env, "BITBUCKET_GIT_HTTP_ORIGIN"),
        build_url=url,
        build_number=number,
        build_id=_get(env, "BITBUCKET_STEP_UUID", "BITBUCKET_PIPELINE_UUID"),
        actor=_get(env, "BITBUCKET_STEP_TRIGGERER_UUID"),
    )


def _buildkite(env: Env) -> CIInfo:
    sha = _get(env, "BUILDKITE_COMMIT")
    build_url = _get(env, "BUILDKITE_BUILD_URL")
    job = _get(env, "BUILDKITE_JOB_ID")
    return CIInfo(
        source_system="buildkite",
        sha=None if sha == "HEAD" else sha,  # "HEAD" until the agent has resolved the commit
        branch=_get(env, "BUILDKITE_BRANCH"),
        repository=_get(env, "BUILDKITE_REPO"),
        build_url=f"{build_url}#{job}" if build_url and job else build_url,
        build_number=_get(env, "BUILDKITE_BUILD_NUMBER"),
        build_id=job or _get(env, "BUILDKITE_BUILD_ID"),
        actor=_get(env, "BUILDKITE_BUILD_CREATOR_EMAIL", "BUILDKITE_BUILD_CREATOR"),
    )


def _is(name: str, value: str) -> Callable[[Env], bool]:
    return lambda env: (env.get(name) or "").strip().lower() == value


def _has(name: str) -> Callable[[Env], bool]:
    return lambda env: bool((env.get(name) or "").strip())


# Order matters only when a job runs one CI inside another; the more specific markers come first.
CI_SYSTEMS: tuple[tuple[str, Callable[[Env], bool], Callable[[Env], CIInfo]], ...] = (
    ("github", _is("GITHUB_ACTIONS", "true"), _github),
    ("gitlab", _is("GITLAB_CI", "true"), _gitlab),
    ("buildkite", _is("BUILDKITE", "true"), _buildkite),
    ("circleci", _is("CIRCLECI", "true"), _circleci),
    ("azure-devops", _is("TF_BUILD", "true"), _azure),
    ("bitbucket", _has("BITBUCKET_BUILD_NUMBER"), _bitbucket),
    ("jenkins", _has("JENKINS_URL"), _jenkins),
)


def detect(env: Env) -> CIInfo:
    """The CI this process runs in and what it says about the run; empty outside CI."""
    for _name, matches, read in CI_SYSTEMS:
        if matches(env):
            return read(env)
    return CIInfo()
