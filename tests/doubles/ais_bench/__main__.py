import sys

from .infer_double import main

sys.exit(main(sys.argv[1:]))
