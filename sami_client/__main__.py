"""`python -m sami_client` runs the `sami` CLI."""

from sami_client.cli import main

raise SystemExit(main())
