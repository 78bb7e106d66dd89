"""`python -m bench [--quick]`: run the benchmarks and write results/<time>/."""

import sys

from bench.run import main

sys.exit(main())
