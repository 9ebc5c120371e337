import sys

from ais_bench.infer_double import main

sys.exit(main(sys.argv[1:]))
