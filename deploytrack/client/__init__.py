"""The CI client: sending events from a pipeline, reading what the CI tells a job."""
