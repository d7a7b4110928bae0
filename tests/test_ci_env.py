"""CI detection rules that differ between events of one CI (pull requests, tags, unresolved commits)."""

from __future__ import annotations

from deploytrack.client.ci_env import CIInfo, detect


def test_outside_ci_nothing_is_guessed() -> None:
    assert detect({"HOME": "/root", "USER": "me", "CI": "true"}) == CIInfo()


def test_github_pull_request_uses_the_head_branch_and_a_tag_is_no_branch() -> None:
    pr = detect({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/pull/12/merge", "GITHUB_REF_NAME": "12/merge",
                 "GITHUB_REF_TYPE": "branch", "GITHUB_HEAD_REF": "feature/x", "GITHUB_REPOSITORY": "a/b",
                 "GITHUB_RUN_ID": "5"})
    assert pr.branch == "feature/x"
    assert pr.repository == "https://github.com/a/b" and pr.build_id == "5"  # no attempt variable: just the run
    tag = detect({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/tags/v1.0", "GITHUB_REF_NAME": "v1.0",
                  "GITHUB_REF_TYPE": "tag", "GITHUB_HEAD_REF": ""})
    assert tag.branch is None and tag.source_system == "github"


def test_github_enterprise_server_url_is_used() -> None:
    info = detect({"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://ghe.example.com",
                   "GITHUB_REPOSITORY": "a/b", "GITHUB_RUN_ID": "9"})
    assert info.build_url == "https://ghe.example.com/a/b/actions/runs/9"


def test_gitlab_merge_request_pipeline_branch() -> None:
    info = detect({"GITLAB_CI": "true", "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "fix/y", "CI_PIPELINE_ID": "3",
                   "CI_PIPELINE_URL": "https://gl/p/3"})
    assert (info.branch, info.build_id, info.build_number, info.build_url) == ("fix/y", "3", "3", "https://gl/p/3")


def test_jenkins_multibranch_and_plain_jobs() -> None:
    multibranch = detect({"JENKINS_URL": "https://j/", "BRANCH_NAME": "PR-7", "CHANGE_BRANCH": "feature/z",
                          "CHANGE_AUTHOR": "sam", "JOB_NAME": "shop/PR-7", "BUILD_NUMBER": "2"})
    assert (multibranch.branch, multibranch.actor, multibranch.build_id) == ("feature/z", "sam", "shop/PR-7-2")
    plain = detect({"JENKINS_URL": "https://j/", "GIT_BRANCH": "origin/release/2.x"})
    assert plain.branch == "release/2.x"


def test_azure_pull_request_source_branch_and_tag_builds() -> None:
    pr = detect({"TF_BUILD": "True", "BUILD_SOURCEBRANCH": "refs/pull/4/merge",
                 "SYSTEM_PULLREQUEST_SOURCEBRANCH": "refs/heads/topic"})
    assert pr.branch == "topic"
    tag = detect({"TF_BUILD": "True", "BUILD_SOURCEBRANCH": "refs/tags/v2"})
    assert tag.branch is None and tag.source_system == "azure-devops"


def test_buildkite_unresolved_head_is_not_a_sha() -> None:
    info = detect({"BUILDKITE": "true", "BUILDKITE_COMMIT": "HEAD", "BUILDKITE_BUILD_ID": "b-1"})
    assert info.sha is None and info.build_id == "b-1"


def test_blank_variables_count_as_missing() -> None:
    info = detect({"CIRCLECI": "true", "CIRCLE_SHA1": "  ", "CIRCLE_WORKFLOW_JOB_ID": "",
                   "CIRCLE_WORKFLOW_ID": "wf-1"})
    assert info.sha is None and info.build_id == "wf-1"
