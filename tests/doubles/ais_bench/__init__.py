"""TEST DOUBLE of Huawei's ais_bench inference tool (`python3 -m ais_bench`), for tests only.

It runs the "double OM" files written by the atc double (tests/doubles/bin/atc) with onnxruntime on the CPU and
reproduces ais_bench's command line, output naming, summary JSON, stdout lines and failure behaviour.
See tests/doubles/README.md. Not part of the convmixer_tasks package and never installed.
"""

__version__ = "0.0.2"  # every real release calls itself 0.0.2 too
