"""Shared fixtures: one real local Ray cluster per test session, Hydra composition, a small built-in corpus."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests_conf import CONF, TINY_TRAIN


@pytest.fixture(scope="session")
def ray_cluster():
    """A real embedded Ray cluster shared by every test that needs one (start-up costs seconds)."""
    import ray
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    # Ray Train's controller collects one report per worker per health check, every 2 s by default: a tiny model
    # that reports every few steps (tens of ms apart) would spend most of each fit waiting for it. Set before
    # ray.init, so that the raylet and every process it starts (a sweep subprocess's controllers too) inherit it.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    ray.init(num_cpus=2, include_dashboard=True, namespace="lmlife-tests",
             runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}})
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True, scope="module")
def cluster_left_clean(request):
    """After each test module: the shared cluster's CPUs are all free again. A Serve app, actor or Tune trial left
    behind would starve later Train tests on 2 CPUs until they hang; name what still holds them."""
    yield
    import ray

    if not ray.is_initialized():
        return
    total = ray.cluster_resources().get("CPU", 0.0)
    deadline = time.monotonic() + 30  # actors of a finished fit or dataset take a moment to exit
    while ray.available_resources().get("CPU", 0.0) < total - 1e-6 and time.monotonic() < deadline:
        time.sleep(0.5)
    free = ray.available_resources().get("CPU", 0.0)
    if free < total - 1e-6:
        from ray.util.state import list_actors

        alive = [f"{a.class_name} (pid {a.pid})" for a in list_actors(filters=[("state", "=", "ALIVE")])]
        pytest.fail(f"{request.module.__name__} left {total - free:g} of {total:g} CPUs held; alive actors: "
                    f"{alive or 'none (tasks or placement groups)'}")


@pytest.fixture(scope="session")
def compose_config():
    """`compose_config("pretrain", [overrides])`, as a fixture so test modules need no imports from here."""
    return compose


def compose(config_name: str, overrides: list[str]):
    """The config a `python -m pipelines.<stage> overrides...` command line would see."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return hydra_compose(config_name=config_name, overrides=overrides)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """Where the session's corpus, tokenizers and shards live (built once, reused by manifest)."""
    return tmp_path_factory.mktemp("data")


# A small built-in corpus and tokenizer: seconds to build, enough to see the loss fall.
SMALL_DATA = ["data.general_docs=600", "data.medical_docs=50", "tokenizer.vocab_size=1000", "data.seq_len=64",
              "data.valid_fraction=0.05", "data.rows_per_shard=200"]


@pytest.fixture(scope="session")
def small_overrides(data_root) -> list[str]:
    return [f"data.root={data_root}", *SMALL_DATA]


@pytest.fixture(scope="session")
def clm_manifest(ray_cluster, small_overrides) -> dict:
    from pipelines.data import prepare_shards

    return prepare_shards(compose("data", small_overrides))


@pytest.fixture(scope="session")
def pairs_manifest(ray_cluster, small_overrides) -> dict:
    from pipelines.data import prepare_shards

    return prepare_shards(compose("data", [*small_overrides, "objective=mlm_nsp"]))


def pytest_configure(config):
    os.environ.setdefault("WANDB_MODE", "offline")



@pytest.fixture(scope="session")
def session_runs(tmp_path_factory) -> Path:
    """Where the shared pre-trained checkpoints of the session live."""
    return tmp_path_factory.mktemp("session-runs")


@pytest.fixture(scope="session")
def pretrained_decoder(ray_cluster, clm_manifest, small_overrides, session_runs):
    """A tiny causal-LM decoder pre-trained for 60 steps (TrainOutcome): the start of every fine-tuning test."""
    from pipelines.train.driver import run_training

    cfg = compose("pretrain", [*small_overrides, *TINY_TRAIN, f"run.root={session_runs}", "run.name=decoder",
                               "model=decoder_tiny", "trainer.max_steps=60", "trainer.ckpt_every=60"])
    return run_training(cfg, stage="pretrain", manifest=clm_manifest)


@pytest.fixture(scope="session")
def pretrained_encoder(ray_cluster, pairs_manifest, small_overrides, session_runs):
    """A tiny encoder pre-trained with MLM + NSP for 60 steps (TrainOutcome): the start of classification tests."""
    from pipelines.train.driver import run_training

    cfg = compose("pretrain", [*small_overrides, *TINY_TRAIN, f"run.root={session_runs}", "run.name=encoder",
                               "objective=mlm_nsp", "model=encoder_tiny", "trainer.max_steps=60",
                               "trainer.micro_batch_size=16", "trainer.ckpt_every=60"])
    return run_training(cfg, stage="pretrain", manifest=pairs_manifest)


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Selenium through Debian's chromedriver at pinned paths (the project's
    setup installs both; Selenium Manager is never asked to download anything: there is no network)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"the web page tests drive Debian's Chromium headless and need {' and '.join(missing)}: "
                    "install them with `apt-get install chromium chromium-driver`", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
