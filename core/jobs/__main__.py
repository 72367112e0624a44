"""`python -m core.jobs run <job dir>`: the supervisor's older entry point, kept working."""

import sys

from core.jobs.supervisor import main

sys.exit(main(sys.argv[1:]))
