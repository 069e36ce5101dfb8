"""What every Ray Train stage shares: `loop.py` (the one worker loop), `objectives.py` (a batch -> loss and
metrics, one class per objective) and `driver.py` (`run_training`: checks, datasets, `TorchTrainer.fit`, `final/`).
Stages import from the modules themselves (`from pipelines.train.driver import run_training`)."""
