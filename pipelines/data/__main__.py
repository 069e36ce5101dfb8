"""`python -m pipelines.data`: the data stage's Hydra entry point (see pipelines/data/build.py)."""

from pipelines.data.build import main

if __name__ == "__main__":
    main()
