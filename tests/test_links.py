"""Only http(s) URLs become links; commit links only for repositories that name a web host."""

from __future__ import annotations

import pytest

from deploytrack.web.links import commit_url, safe_href

SHA = "0123456789abcdef0123"


@pytest.mark.parametrize("url", ["https://ci.example.com/b/1", "http://jenkins:8080/job/x/2/", " HTTPS://x.io/a "])
def test_http_urls_are_links(url):
    assert safe_href(url) == url.strip()


@pytest.mark.parametrize("url", ["javascript:alert(1)", "JavaScript:alert(1)", " javascript:alert(1)",
                                 "data:text/html,<script>1</script>", "vbscript:x", "//evil.example/", "/relative",
                                 "https:/no-host", "ftp://x.example/", "https://x.example/" + "a" * 3000, None, 42])
def test_everything_else_stays_text(url):
    assert safe_href(url) is None


@pytest.mark.parametrize("repository, expected", [
    ("https://github.com/acme/api", f"https://github.com/acme/api/commit/{SHA}"),
    ("https://github.com/acme/api.git/", f"https://github.com/acme/api/commit/{SHA}"),
    ("github.com/acme/api", f"https://github.com/acme/api/commit/{SHA}"),
    ("git@github.com:acme/api.git", f"https://github.com/acme/api/commit/{SHA}"),
    ("https://gitlab.com/group/sub/api", f"https://gitlab.com/group/sub/api/-/commit/{SHA}"),
    ("git@gitlab.example.org:group/api.git", f"https://gitlab.example.org/group/api/-/commit/{SHA}"),
    ("http://git.internal:3000/team/api", f"http://git.internal:3000/team/api/commit/{SHA}"),
])
def test_commit_links_for_web_hosted_repositories(repository, expected):
    assert commit_url(repository, SHA.upper()) == expected


@pytest.mark.parametrize("repository, sha", [
    ("acme/api", SHA), ("https://github.com/acme", SHA), ("javascript:alert(1)//github.com/a/b", SHA),
    ("https://github.com/a/b?x=1", SHA), ("https://u:p@github.com/a/b", SHA), ('https://github.com/a/b"x', SHA),
    ("ssh://git@github.com/a/b", SHA), ("https://github.com/a/b", "<script>"), ("https://github.com/a/b", "abc"),
    (None, SHA), ("https://github.com/a/b", None),
])
def test_no_commit_link_otherwise(repository, sha):
    assert commit_url(repository, sha) is None
