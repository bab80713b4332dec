"""The fuzz campaign's engine, shared by the tests (tests/artifact/test_fuzz_campaign.py) and
the benchmark command (``python -m bench.fuzz``).

``bases``: small artifacts, a Hugging Face folder, recipes and method configs to start from;
``mutations``: one damaged or hostile case per ``(seed, index)``, planned without touching any
file and applied in a scratch folder; ``engine``: runs a case (load, then one forward) and
classifies its outcome, in-process or in forked worker processes bounded in memory and time.
"""
