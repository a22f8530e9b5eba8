"""`python -m occlum_instance.checks [ROOT]`: run every check, exit 1 on any finding."""

import sys

from . import main

sys.exit(main(sys.argv[1:]))
