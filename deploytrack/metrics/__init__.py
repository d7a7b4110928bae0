"""The DORA metrics core: deployment fold, incident links, facts, windows, the nightly job."""
