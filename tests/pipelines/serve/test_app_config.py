"""The app builder's arguments (what `serve run pipelines.serve.app:build ...` and a RayService's serveConfigV2
pass) compose over conf/serve.yaml like the command line: strings as Hydra overrides, typed values as they are."""

import pytest
from hydra.errors import ConfigCompositionException

from pipelines.errors import ConfigError
from pipelines.serve.app import config_from_args, default_model_name


def test_builder_arguments_compose_over_the_defaults():
    cfg = config_from_args({"checkpoint": "s3://bucket/runs/align/demo", "serve.engine.max_batch": "16",
                            "serve.engine.batching": "false",
                            "serve": {"num_replicas": 2, "autoscaling_config": {"min_replicas": 1, "max_replicas": 3}}})
    assert cfg.checkpoint == "s3://bucket/runs/align/demo"
    assert cfg.serve.engine.max_batch == 16 and cfg.serve.engine.batching is False
    assert cfg.serve.num_replicas == 2 and cfg.serve.autoscaling_config.max_replicas == 3
    assert cfg.serve.generation.min_reply_tokens == 16  # untouched defaults stay
    dotted = config_from_args({"checkpoint": "x", "serve.autoscaling_config": {"min_replicas": 1, "max_replicas": 4}})
    assert dotted.serve.autoscaling_config.max_replicas == 4


def test_unknown_builder_arguments_are_errors():
    with pytest.raises(ConfigCompositionException):
        config_from_args({"checkpoint": "x", "serve.engine.max_bacth": "16"})
    with pytest.raises(ConfigError, match="unknown serve setting 'serve.prot'"):
        config_from_args({"checkpoint": "x", "serve.prot": 9000})


def test_the_model_is_named_after_its_run():
    assert default_model_name("runs/align/demo-grpo/final") == "lmlife-demo-grpo"
    assert default_model_name("s3://b/runs/finetune/instruct/") == "lmlife-instruct"


def test_listening_beyond_localhost_without_a_key_warns_and_a_missing_key_is_an_error(caplog, monkeypatch):
    from pipelines.serve.app import application

    with caplog.at_level("WARNING", logger="lmlife.serve"):
        application(config_from_args({"checkpoint": "x", "serve.host": "0.0.0.0"}))
    assert "without an API key" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lmlife.serve"):
        application(config_from_args({"checkpoint": "x"}))
    assert "without an API key" not in caplog.text
    monkeypatch.delenv("LMLIFE_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError, match="LMLIFE_NO_SUCH_KEY names an environment variable that is not set"):
        application(config_from_args({"checkpoint": "x", "serve.api_key_env": "LMLIFE_NO_SUCH_KEY"}))


def test_the_builder_checks_the_checkpoint_before_any_replica(tmp_path):
    from pipelines.errors import MissingPathError
    from pipelines.serve.app import build

    with pytest.raises(MissingPathError, match=f"checkpoint={tmp_path}/nowhere does not exist"):
        build({"checkpoint": f"{tmp_path}/nowhere"})
    with pytest.raises(MissingPathError, match="checkpoint= is required"):
        build({})


@pytest.mark.parametrize("key, advice", [("serve.port", "serve start --http-port P"),
                                         ("serve.host", "serve start --http-host H"),
                                         ("serve.app_name", "serve run --name N"),
                                         ("serve.route_prefix", "serve run --route-prefix R")])
def test_the_builder_refuses_what_only_serve_can_set(tmp_path, key, advice):
    """`serve run pipelines.serve.app:build ... serve.port=9000` used to be ignored: Serve's proxy stayed at 8000."""
    from pipelines.serve.app import build

    with pytest.raises(ConfigError, match=f"{key} has no effect in the app builder") as error:
        build({"checkpoint": f"{tmp_path}/nowhere", key: "9000"})
    assert advice in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="serve.port has no effect"):  # nested, as a serveConfigV2's args
        build({"checkpoint": f"{tmp_path}/nowhere", "serve": {"port": 9000}})
