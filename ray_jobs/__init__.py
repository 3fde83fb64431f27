"""rocoray's Ray jobs: thin entry points around ``core``.

Each module has ``main(argv=None)``, so ``python -m ray_jobs.X``, ``ray job submit ... --
python -m ray_jobs.X`` and the ``rocoray X`` console script all run the same code.
"""
