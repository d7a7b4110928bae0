"""HTTP plumbing shared by every endpoint: bodies and JSON, auth, sessions, OpenAPI, links."""
