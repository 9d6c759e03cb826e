"""`python -m sami_agent` is `sami-agent`."""

from sami_agent.cli import main

raise SystemExit(main())
