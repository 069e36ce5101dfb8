"""`python -m pipelines.corpus --out DIR [--general-docs N] [--seed S]`: write the built-in corpus alone."""

from pipelines.corpus.writer import main

if __name__ == "__main__":
    main()
