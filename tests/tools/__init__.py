"""Tooling only the tests use (a headless browser driver, a reader for W&B's local run files): kept out of
the installed packages so the product does not carry code that nothing in it calls."""
