"""The `deploytrack` command and its sub-commands."""
