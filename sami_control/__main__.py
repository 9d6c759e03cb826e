import sys

from sami_control.cli import main

sys.exit(main())
